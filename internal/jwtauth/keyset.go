package jwtauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// Key set timing: a background refresh every refreshEvery; a refetch for
// an unknown kid at most once per kidEvery; the last keys serve at most
// keepFor after the issuer stopped answering.
const (
	refreshEvery = 10 * time.Minute
	kidEvery     = 30 * time.Second
	keepFor      = 24 * time.Hour
	fetchTimeout = 10 * time.Second
	maxDocBytes  = 1 << 20
	filePoll     = 2 * time.Second
)

// IssuerConfig is one issuer of caller tokens and how its keys are had:
// OIDC discovery at Issuer (default), a JWKS URL, or a JWKS file.
type IssuerConfig struct {
	Issuer string
	// Audiences are the audiences its callers expect: a token must name
	// one of them.
	Audiences []string
	// JWKSURL is fetched instead of discovery; JWKSFile is read instead
	// of any network (kept fresh: polled, and re-read on reload).
	JWKSURL  string
	JWKSFile string
	// RootCAs verifies the issuer's HTTPS (nil: system roots).
	RootCAs *x509.CertPool
	// TokenFile holds a bearer token sent with every fetch (the
	// Kubernetes API server's discovery needs one); read per fetch.
	TokenFile string
	// Leeway is the clock skew allowed on exp and nbf. Default 30s.
	Leeway time.Duration
	// MaxLifetime caps exp − iat (exp − now without iat). Default 24h.
	MaxLifetime time.Duration
}

func (c IssuerConfig) same(o IssuerConfig) bool {
	return c.Issuer == o.Issuer && slices.Equal(c.Audiences, o.Audiences) && c.JWKSURL == o.JWKSURL && c.JWKSFile == o.JWKSFile && c.RootCAs.Equal(o.RootCAs) &&
		c.TokenFile == o.TokenFile && c.Leeway == o.Leeway && c.MaxLifetime == o.MaxLifetime
}

// keySet keeps one issuer's keys: fetched in the background (never at
// construction), refreshed every 10 minutes, refetched for an unknown kid
// at most once per 30 s, and kept at most 24 h after the issuer stopped
// answering.
type keySet struct {
	cfg    IssuerConfig
	client *http.Client
	log    *zap.Logger
	now    func() time.Time
	onLoad func(issuer, result string)

	mu        sync.Mutex
	keys      *jose.JSONWebKeySet
	loadedAt  time.Time // last successful fetch
	lastTry   time.Time // last fetch attempt
	lastKid   time.Time // last refetch for an unknown kid
	lastErr   string
	fetching  chan struct{}
	fileStamp string
	fetches   int
	stop      context.CancelFunc
	done      chan struct{}
}

func newKeySet(cfg IssuerConfig, log *zap.Logger, now func() time.Time, onLoad func(string, string)) *keySet {
	tr := &http.Transport{
		Proxy:               nil, // directly: never through the vendors' egress proxy
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs},
		TLSHandshakeTimeout: 5 * time.Second,
		IdleConnTimeout:     30 * time.Second,
	}
	return &keySet{cfg: cfg, log: log, now: now, onLoad: onLoad,
		client: &http.Client{Transport: tr, Timeout: fetchTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// start runs the background refresh until close.
func (k *keySet) start() {
	ctx, cancel := context.WithCancel(context.Background())
	k.stop, k.done = cancel, make(chan struct{})
	go func() {
		defer close(k.done)
		k.run(ctx)
	}()
}

func (k *keySet) close() {
	if k.stop != nil {
		k.stop()
		<-k.done
	}
}

func (k *keySet) run(ctx context.Context) {
	retry := 5 * time.Second
	for {
		err := k.fetch(ctx)
		wait := refreshEvery
		if k.cfg.JWKSFile != "" {
			wait = filePoll
		}
		if err != nil {
			wait = min(retry, wait)
			retry = min(2*retry, 5*time.Minute)
		} else {
			retry = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// key returns the verification keys for kid. An unknown kid refetches the
// set (at most once per 30 s, whatever the background refresh did, so a
// rotated key is found at once and a flood of made-up kids costs the
// issuer one fetch per 30 s); err is set when no keys can be had.
func (k *keySet) key(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	keys, err := k.current()
	if err != nil {
		return nil, err
	}
	if found := keys.Key(kid); len(found) > 0 {
		return found, nil
	}
	k.mu.Lock()
	due := k.lastKid.IsZero() || k.now().Sub(k.lastKid) >= kidEvery
	if due {
		k.lastKid = k.now()
	}
	k.mu.Unlock()
	if !due {
		return nil, nil
	}
	_ = k.fetch(ctx)
	keys, err = k.current()
	if err != nil {
		return nil, err
	}
	return keys.Key(kid), nil
}

// current is the key set in use; ErrUnavailable when none is held (never
// fetched, or the last one older than 24 h).
func (k *keySet) current() (*jose.JSONWebKeySet, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil || k.now().Sub(k.loadedAt) > keepFor {
		msg := "no keys yet"
		if k.keys != nil {
			msg = "its last keys are more than 24h old"
		}
		if k.lastErr != "" {
			msg += ": " + k.lastErr
		}
		return nil, &Error{Reason: "the keys of issuer " + k.cfg.Issuer + " cannot be had (" + msg + ")", Unavailable: true}
	}
	return k.keys, nil
}

// fetch loads the key set once; concurrent callers share one fetch.
func (k *keySet) fetch(ctx context.Context) error {
	k.mu.Lock()
	if ch := k.fetching; ch != nil {
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	ch := make(chan struct{})
	k.fetching = ch
	k.lastTry = k.now()
	k.mu.Unlock()

	keys, stamp, err := k.load(ctx)
	k.mu.Lock()
	k.fetching = nil
	close(ch)
	if err == nil {
		if keys != nil {
			k.keys, k.fileStamp = keys, stamp
			k.fetches++
		}
		k.loadedAt, k.lastErr = k.now(), ""
	} else {
		k.lastErr = err.Error()
	}
	k.mu.Unlock()
	result := "ok"
	if err != nil {
		result = "failed"
		k.log.Warn("issuer keys not loaded", zap.String("issuer", k.cfg.Issuer), zap.Error(err))
	}
	if k.onLoad != nil && (err != nil || keys != nil) {
		k.onLoad(k.cfg.Issuer, result)
	}
	return err
}

// load reads the key set from its source; keys is nil when a file did
// not change.
func (k *keySet) load(ctx context.Context) (*jose.JSONWebKeySet, string, error) {
	if f := k.cfg.JWKSFile; f != "" {
		st, err := os.Stat(f)
		if err != nil {
			return nil, "", fmt.Errorf("jwks_file: %w", err)
		}
		stamp := fmt.Sprint(st.ModTime().UnixNano(), st.Size())
		k.mu.Lock()
		same := stamp == k.fileStamp && k.keys != nil
		k.mu.Unlock()
		if same {
			return nil, stamp, nil
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, "", fmt.Errorf("jwks_file: %w", err)
		}
		keys, err := parseKeys(b)
		return keys, stamp, err
	}
	url := k.cfg.JWKSURL
	if url == "" {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		b, err := k.get(ctx, strings.TrimSuffix(k.cfg.Issuer, "/")+"/.well-known/openid-configuration")
		if err != nil {
			return nil, "", fmt.Errorf("discovery: %w", err)
		}
		if err := json.Unmarshal(b, &doc); err != nil || doc.JWKSURI == "" {
			return nil, "", errors.New("discovery: no jwks_uri in the openid-configuration")
		}
		if doc.Issuer != k.cfg.Issuer {
			return nil, "", fmt.Errorf("discovery: the document names issuer %q, not %q", doc.Issuer, k.cfg.Issuer)
		}
		url = doc.JWKSURI
	}
	b, err := k.get(ctx, url)
	if err != nil {
		return nil, "", fmt.Errorf("jwks: %w", err)
	}
	keys, err := parseKeys(b)
	return keys, "", err
}

func (k *keySet) get(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if f := k.cfg.TokenFile; f != "" {
		tok, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("token_file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %s", url, shortErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxDocBytes))
}

// parseKeys reads a JWKS, keeping the public keys of the allowed
// algorithms' types (RSA, EC, OKP).
func parseKeys(b []byte) (*jose.JSONWebKeySet, error) {
	var raw jose.JSONWebKeySet
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	out := &jose.JSONWebKeySet{}
	for _, key := range raw.Keys {
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if !key.IsPublic() {
			key = key.Public()
		}
		if key.Valid() {
			out.Keys = append(out.Keys, key)
		}
	}
	if len(out.Keys) == 0 {
		return nil, errors.New("the JWKS holds no signing key")
	}
	return out, nil
}

// shortErr is a fetch error without its URL (said once by the caller).
func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// status is the key set's state for /readyz and metrics.
func (k *keySet) status() IssuerStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := IssuerStatus{Issuer: k.cfg.Issuer, LastError: k.lastErr, Fetches: k.fetches}
	if k.keys != nil {
		st.Keys = len(k.keys.Keys)
		st.LoadedAt = k.loadedAt
		st.Available = k.now().Sub(k.loadedAt) <= keepFor
	}
	return st
}

// IssuerStatus is one issuer's keys as held.
type IssuerStatus struct {
	Issuer    string
	Available bool
	Keys      int
	LoadedAt  time.Time
	LastError string
	// Fetches counts the key sets loaded.
	Fetches int
}
