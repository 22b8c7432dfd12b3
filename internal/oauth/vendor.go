// Package oauth is keybroker's side of OAuth2 (RFC 6749): vendor tokens
// fetched with the client-credentials grant and kept fresh in the
// background (VendorTokens), and keybroker's own short-lived tokens for
// drop-in OAuth clients: the token endpoint's request and reply shapes
// (token.go) and the signed, caller-bound tokens (Issuer). It does not
// read configuration, route calls or write the audit: the proxy does, and
// hands it an HTTP client, a credential reader and a clock.
package oauth

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/keybroker/keybroker/internal/secrets"
)

// Fields of the client credential in its source. The fetched vendor token
// goes in secrets.Credential.Token.
const (
	FieldClientID     = "client_id"
	FieldClientSecret = "client_secret"
)

// DefaultLifetime is a vendor token's assumed life when the vendor's reply
// carries no expires_in.
const DefaultLifetime = 5 * time.Minute

// refreshAt is the part of a token's life after which it is refreshed in
// the background.
const refreshAt = 0.8

// failRetry is how often calls may ask a failing token endpoint again.
const failRetry = time.Second

// renewEvery bounds forced refetches (after a vendor 401) to one per this
// interval per upstream, however many calls were refused.
const renewEvery = time.Second

// VendorConfig is one upstream's client-credentials grant.
type VendorConfig struct {
	// Upstream names the upstream in messages.
	Upstream string
	// TokenURL is the vendor's token endpoint.
	TokenURL *url.URL
	// Scopes are sent with every token request (none: no scope).
	Scopes []string
	// Basic sends the client credentials as HTTP Basic; otherwise they go
	// in the form body.
	Basic bool
	// Client reaches the token endpoint (keybroker's egress: its CA, its
	// proxy, never the environment's).
	Client *http.Client
	// Timeout bounds one token request. Default 30s.
	Timeout time.Duration
	// Credential returns the current client credential, for refreshes.
	Credential func(ctx context.Context) (secrets.Credential, error)
	// OnFetch, when set, is told of every fetch (metrics, events).
	OnFetch func(Fetch)
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Fetch is one token request's outcome, for metrics and events: never the
// token.
type Fetch struct {
	Upstream string
	// Reason is first (a credential version's first token), refresh
	// (background, before expiry), renew (after a vendor 401) or prove (a
	// rotated secret tried before use).
	Reason  string
	Cred    secrets.Credential // client credential used (for Source, Ref, Version)
	Expires time.Time          // zero on failure
	Err     *FetchError        // nil on success
	// Changed: the first failure after a success, or the first success
	// after a failure.
	Changed bool
}

// Fetch reasons.
const (
	ReasonFirst   = "first"
	ReasonRefresh = "refresh"
	ReasonRenew   = "renew"
	ReasonProve   = "prove"
)

// FetchError says why no vendor token could be had, in words that name the
// token endpoint and never a value.
type FetchError struct {
	Kind FetchKind
	// Status is the token endpoint's HTTP status (0: no answer).
	Status int
	// Code is the OAuth error code it answered ("invalid_client").
	Code string
	// Client: the client credentials themselves were refused.
	Client bool
	Msg    string
}

func (e *FetchError) Error() string { return e.Msg }

// FetchKind tells token endpoint failures apart.
type FetchKind int

// Kinds of failed token fetches.
const (
	// Refused: the token endpoint refused the client credentials or the
	// request (invalid_client, invalid_scope, ...).
	Refused FetchKind = iota + 1
	// Failed: it answered, but not with a token (5xx, no access_token).
	Failed
	// Unreachable: no answer (connect, TLS, reset).
	Unreachable
	// Timeout: no answer in time.
	Timeout
)

// VendorTokens keeps one upstream's vendor token: fetched on first use,
// refreshed in the background once 80% of its life has passed (the
// current one is served meanwhile), fetched anew for a new client
// credential version, and renewed once after a vendor 401. Concurrent
// fetches are one fetch.
type VendorTokens struct {
	cfg VendorConfig
	cur atomic.Pointer[token]

	mu       sync.Mutex
	inflight *flight
	timer    *time.Timer
	closed   bool
	renewed  time.Time // last forced fetch
	proved   *token    // fetched while proving a rotated version
	failing  bool
	retry    time.Duration
	lastErr  *FetchError
	failedAt time.Time
	fetchCnt atomic.Int64
}

// token is a fetched vendor token with the credential it was fetched with.
type token struct {
	cred    secrets.Credential // the client credential, its Token the vendor token
	value   string
	fetched time.Time
	expires time.Time
}

type flight struct {
	done chan struct{}
	tok  *token
	err  *FetchError
}

// NewVendorTokens returns the token keeper of one upstream. It fetches
// nothing until the first call.
func NewVendorTokens(cfg VendorConfig) *VendorTokens {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &VendorTokens{cfg: cfg}
}

// Config is what the keeper was made with.
func (v *VendorTokens) Config() VendorConfig { return v.cfg }

// Fetches counts token requests sent.
func (v *VendorTokens) Fetches() int64 { return v.fetchCnt.Load() }

// Close stops the background refresh.
func (v *VendorTokens) Close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	if v.timer != nil {
		v.timer.Stop()
	}
}

// Token returns cred with the vendor token as its Token. A
// live token fetched with cred's version is served as it is; otherwise
// one is fetched (once, however many calls ask). A token of an earlier
// version still alive is served while the new version's fetch fails.
func (v *VendorTokens) Token(ctx context.Context, cred secrets.Credential) (secrets.Credential, error) {
	now := v.cfg.Now()
	t := v.cur.Load()
	if t != nil && sameVersion(t.cred, cred) && now.Before(t.expires) {
		return t.cred, nil
	}
	if t == nil || !sameVersion(t.cred, cred) {
		v.mu.Lock()
		if p := v.proved; p != nil && sameVersion(p.cred, cred) && now.Before(p.expires) {
			// The rotation's proof fetched this version's token already.
			v.proved = nil
			v.cur.Store(p)
			v.scheduleLocked(p)
			v.mu.Unlock()
			return p.cred, nil
		}
		v.mu.Unlock()
	}
	reason := ReasonFirst
	if t != nil && sameVersion(t.cred, cred) {
		reason = ReasonRefresh // expired without a background refresh
	}
	// While the token endpoint fails, calls ask it at most once per
	// failRetry: the rest get the last failure at once.
	v.mu.Lock()
	lastErr, failedAt := v.lastErr, v.failedAt
	v.mu.Unlock()
	if lastErr != nil && now.Sub(failedAt) < failRetry && (t == nil || !now.Before(t.expires)) {
		return secrets.Credential{}, lastErr
	}
	nt, err := v.fetch(ctx, cred, reason)
	if err != nil {
		if t != nil && now.Before(t.expires) {
			return t.cred, nil
		}
		return secrets.Credential{}, err
	}
	return nt.cred, nil
}

// Renew is called after the vendor refused the token in use (used's
// Token): it fetches a new one with cred, unless another call
// did so already, and returns it. ok is false when there is no other
// token to try (the fetch failed, or one was forced less than a second
// ago and gave this same token).
func (v *VendorTokens) Renew(ctx context.Context, used, cred secrets.Credential) (secrets.Credential, bool) {
	refused := accessToken(used)
	if t := v.cur.Load(); t != nil && t.value != refused && sameVersion(t.cred, cred) && v.cfg.Now().Before(t.expires) {
		return t.cred, true
	}
	v.mu.Lock()
	if v.cfg.Now().Sub(v.renewed) < renewEvery {
		v.mu.Unlock()
		return secrets.Credential{}, false
	}
	v.renewed = v.cfg.Now()
	v.mu.Unlock()
	t, err := v.fetch(ctx, cred, ReasonRenew)
	if err != nil || t.value == refused {
		return secrets.Credential{}, false
	}
	return t.cred, true
}

// Prove fetches a token with a rotated credential before it is used: the
// vendor's token endpoint is the judge. A token it gives is kept for when
// the version goes into use.
func (v *VendorTokens) Prove(ctx context.Context, cred secrets.Credential) (secrets.Credential, *FetchError) {
	t, err := v.request(ctx, cred, ReasonProve)
	if err != nil {
		return secrets.Credential{}, err
	}
	v.mu.Lock()
	v.proved = t
	v.mu.Unlock()
	return t.cred, nil
}

// fetch runs one token request for cred, or joins the one under way, and
// makes its token current.
func (v *VendorTokens) fetch(ctx context.Context, cred secrets.Credential, reason string) (*token, error) {
	v.mu.Lock()
	f := v.inflight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		v.inflight = f
		go func() {
			// Detached from the caller: a caller that goes away does not
			// cut the fetch short for the others waiting on it.
			t, err := v.request(context.WithoutCancel(ctx), cred, reason)
			v.mu.Lock()
			f.tok, f.err = t, err
			v.inflight = nil
			if err == nil {
				if cur := v.cur.Load(); cur == nil || cred.Version >= cur.cred.Version || cred.Source != cur.cred.Source || cred.Ref != cur.cred.Ref {
					v.cur.Store(t)
				}
				v.scheduleLocked(t)
			}
			v.mu.Unlock()
			close(f.done)
		}()
	}
	v.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, &FetchError{Kind: Timeout, Msg: "the caller went away while the vendor token was fetched"}
	}
	if f.err != nil {
		return nil, f.err
	}
	if !sameVersion(f.tok.cred, cred) {
		// The fetch joined was for another version: fetch for this one.
		return v.fetch(ctx, cred, reason)
	}
	return f.tok, nil
}

// request asks the token endpoint for a token with cred.
func (v *VendorTokens) request(ctx context.Context, cred secrets.Credential, reason string) (*token, *FetchError) {
	id, _ := cred.Field(FieldClientID)
	secret, _ := cred.Field(FieldClientSecret)
	style := oauth2.AuthStyleInParams
	if v.cfg.Basic {
		style = oauth2.AuthStyleInHeader
	}
	cc := clientcredentials.Config{ClientID: id.Reveal(), ClientSecret: secret.Reveal(),
		TokenURL: v.cfg.TokenURL.String(), Scopes: v.cfg.Scopes, AuthStyle: style}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, v.cfg.Client), v.cfg.Timeout)
	defer cancel()
	start := v.cfg.Now()
	v.fetchCnt.Add(1)
	tok, err := cc.Token(ctx)
	var t *token
	var ferr *FetchError
	if err != nil {
		ferr = v.classify(err)
	} else {
		// x/oauth2 turns expires_in into Expiry on the wall clock as the
		// reply came; it is taken as a lifetime from the request's start
		// on keybroker's clock, so the token is never thought alive
		// longer than the vendor thinks.
		life := DefaultLifetime
		switch {
		case tok.ExpiresIn > 0:
			life = time.Duration(tok.ExpiresIn) * time.Second
		case !tok.Expiry.IsZero():
			life = max(time.Until(tok.Expiry), 0)
		}
		c := cred
		c.Token = secrets.Secret(tok.AccessToken)
		t = &token{cred: c, value: tok.AccessToken, fetched: start, expires: start.Add(life)}
	}
	v.note(reason, cred, t, ferr)
	return t, ferr
}

// note tells OnFetch, and remembers whether fetching fails.
func (v *VendorTokens) note(reason string, cred secrets.Credential, t *token, err *FetchError) {
	v.mu.Lock()
	changed := v.failing != (err != nil)
	v.failing, v.lastErr = err != nil, err
	if err != nil {
		v.failedAt = v.cfg.Now()
	}
	v.mu.Unlock()
	if v.cfg.OnFetch == nil {
		return
	}
	f := Fetch{Upstream: v.cfg.Upstream, Reason: reason, Cred: cred, Err: err, Changed: changed}
	if t != nil {
		f.Expires = t.expires
	}
	v.cfg.OnFetch(f)
}

// scheduleLocked sets the background refresh of t: at 80% of its life,
// and after a failed refresh again in a shorter while, never past its
// expiry. v.mu is held.
func (v *VendorTokens) scheduleLocked(t *token) {
	if v.closed {
		return
	}
	if v.timer != nil {
		v.timer.Stop()
	}
	v.retry = 0
	wait := time.Duration(float64(t.expires.Sub(t.fetched)) * refreshAt)
	v.timer = time.AfterFunc(max(wait-v.cfg.Now().Sub(t.fetched), 0), v.refresh)
}

// refresh fetches the next token in the background. A failed refresh is
// tried again after 1s, doubling, within the current token's life.
func (v *VendorTokens) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), v.cfg.Timeout+5*time.Second)
	defer cancel()
	cred, err := v.cfg.Credential(ctx)
	if err == nil {
		_, err = v.fetch(ctx, cred, ReasonRefresh)
	}
	if err == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return
	}
	v.retry = min(max(2*v.retry, time.Second), time.Minute)
	v.timer = time.AfterFunc(v.retry, v.refresh)
}

// Failing reports the last token request's failure (nil: it worked).
func (v *VendorTokens) Failing() *FetchError {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lastErr
}

func (v *VendorTokens) endpoint() string {
	u := *v.cfg.TokenURL
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}

func answer(status int, code string) string {
	s := strconv.Itoa(status)
	if code != "" {
		s += " " + code
	}
	return s
}

func sameVersion(a, b secrets.Credential) bool {
	return a.Version == b.Version && a.Source == b.Source && a.Ref == b.Ref
}

func accessToken(c secrets.Credential) string { return c.Token.Reveal() }
