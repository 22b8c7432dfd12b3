package secrets

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
)

// VaultOptions configure the Vault client. The caller resolves everything
// from configuration and environment: this package reads no variables.
type VaultOptions struct {
	Address   string
	Namespace string
	// RootCAs verify Vault's certificate; nil means the system roots.
	RootCAs *x509.CertPool
	// Method is token, approle or kubernetes.
	Method string
	// Token is the token for method token when TokenFile is empty.
	Token     string
	TokenFile string
	// Mount is the auth method's mount path (approle, kubernetes).
	Mount        string
	RoleID       string
	SecretIDFile string
	Role         string
	JWTFile      string
	// Timeout bounds one Vault request. Default 10s.
	Timeout time.Duration
	// Log receives operational messages. Default: none.
	Log *zap.Logger
	// OnEvent, when set, receives vault_login, vault_renewed,
	// vault_login_failed events (Type field), for the audit trail.
	OnEvent func(Event)
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Vault is a logged-in Vault client shared by every Vault source. Its own
// token is kept alive by Run: renewed with api.LifetimeWatcher while it can
// be, replaced by a fresh login when renewal ends or Vault says 403.
type Vault struct {
	opts   VaultOptions
	client *api.Client

	mu        sync.Mutex
	loggedIn  bool
	expires   time.Time // zero: never
	lastLogin time.Time
	auth      *api.Secret // the login's auth, for the watcher
}

// NewVault returns a Vault client. It makes no request; call Login or Run.
func NewVault(opts VaultOptions) (*Vault, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: opts.RootCAs}
	hc := &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tc,
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		},
		Timeout: opts.Timeout,
		// Vault answers, it does not redirect a client elsewhere; a
		// redirect would carry the token to another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// The cache retries on its own schedule: one retry layer only.
	client, err := api.NewClient(&api.Config{Address: opts.Address, HttpClient: hc, MaxRetries: 0, Timeout: opts.Timeout})
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	// api.NewClient reads VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS
	// itself; keybroker takes those from its configuration only.
	client.ClearToken()
	client.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	if opts.Namespace != "" {
		client.SetNamespace(opts.Namespace)
	} else {
		client.ClearNamespace()
	}
	return &Vault{opts: opts, client: client}, nil
}

// Login authenticates with the configured method and keeps the token.
func (v *Vault) Login(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.loginLocked(ctx)
}

func (v *Vault) loginLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, v.opts.Timeout)
	defer cancel()
	v.lastLogin = v.opts.Now()
	secret, err := v.authenticate(ctx)
	if err != nil {
		v.loggedIn = false
		v.event(Event{Type: "vault_login_failed", Error: err.Error()})
		v.opts.Log.Error("vault login failed", zap.String("method", v.opts.Method), zap.Error(err))
		return err
	}
	v.auth = secret
	v.loggedIn = true
	ttl := time.Duration(0)
	if secret.Auth != nil {
		ttl = time.Duration(secret.Auth.LeaseDuration) * time.Second
	}
	v.expires = time.Time{}
	if ttl > 0 {
		v.expires = v.opts.Now().Add(ttl)
	}
	v.event(Event{Type: "vault_login", Source: "vault", Ref: v.opts.Method})
	v.opts.Log.Info("vault login", zap.String("method", v.opts.Method), zap.Duration("ttl", ttl))
	return nil
}

// authenticate logs in and sets the client's token. Errors name the method
// and files, never the token, secret id or JWT.
func (v *Vault) authenticate(ctx context.Context) (*api.Secret, error) {
	o := v.opts
	switch o.Method {
	case "token", "":
		tok := o.Token
		if o.TokenFile != "" {
			b, err := os.ReadFile(o.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("vault token_file: %w", errors.Unwrap(err))
			}
			tok = strings.TrimSpace(string(b))
		}
		if tok == "" {
			return nil, errors.New("vault token: empty")
		}
		v.client.SetToken(tok)
		s, err := v.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("vault token lookup: %w", err)
		}
		// Turn the lookup into the shape of a login, for the watcher.
		ttl, _ := s.TokenTTL()
		renewable, _ := s.TokenIsRenewable()
		return &api.Secret{Auth: &api.SecretAuth{ClientToken: tok, LeaseDuration: int(ttl.Seconds()), Renewable: renewable}}, nil
	case "approle":
		sid, err := os.ReadFile(o.SecretIDFile)
		if err != nil {
			return nil, fmt.Errorf("vault approle secret_id_file: %w", errors.Unwrap(err))
		}
		return v.login(ctx, map[string]any{"role_id": o.RoleID, "secret_id": strings.TrimSpace(string(sid))})
	case "kubernetes":
		jwt, err := os.ReadFile(o.JWTFile)
		if err != nil {
			return nil, fmt.Errorf("vault kubernetes jwt_file: %w", errors.Unwrap(err))
		}
		return v.login(ctx, map[string]any{"role": o.Role, "jwt": strings.TrimSpace(string(jwt))})
	default:
		return nil, fmt.Errorf("vault: unknown auth method %q", o.Method)
	}
}

func (v *Vault) login(ctx context.Context, data map[string]any) (*api.Secret, error) {
	v.client.ClearToken()
	path := "auth/" + strings.Trim(v.opts.Mount, "/") + "/login"
	s, err := v.client.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, fmt.Errorf("vault %s login at %s: %w", v.opts.Method, path, vaultErr(err))
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault %s login at %s: no token in the answer", v.opts.Method, path)
	}
	v.client.SetToken(s.Auth.ClientToken)
	return s, nil
}

// relogin logs in again after a 403, unless a login happened in the last
// few seconds (then the 403 is a policy problem, not an expired token).
func (v *Vault) relogin(ctx context.Context) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.opts.Now().Sub(v.lastLogin) < 5*time.Second {
		return false
	}
	return v.loginLocked(ctx) == nil
}

// TokenExpiry returns when keybroker's Vault token expires (zero: never, or
// not logged in), for metrics.
func (v *Vault) TokenExpiry() (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.expires, v.loggedIn
}

// Run keeps the token alive until ctx ends: it logs in if needed, renews
// the token while Vault allows, and logs in afresh when renewal ends (max
// TTL reached, token revoked) or fails. Failed logins are retried with
// back-off up to a minute.
func (v *Vault) Run(ctx context.Context) error {
	backoff := time.Second
	for ctx.Err() == nil {
		v.mu.Lock()
		var err error
		if !v.loggedIn {
			err = v.loginLocked(ctx)
		}
		auth := v.auth
		v.mu.Unlock()
		if err != nil {
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		if auth == nil || auth.Auth == nil || !auth.Auth.Renewable || auth.Auth.LeaseDuration == 0 {
			<-ctx.Done() // a root or non-renewable token: nothing to keep alive
			return nil
		}
		v.watch(ctx, auth)
		v.mu.Lock()
		v.loggedIn = false // renewal is over: log in afresh
		v.mu.Unlock()
	}
	return nil
}

// watch renews the token until renewal ends.
func (v *Vault) watch(ctx context.Context, auth *api.Secret) {
	w, err := v.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: auth})
	if err != nil {
		v.opts.Log.Warn("vault token watcher", zap.Error(err))
		sleep(ctx, time.Second)
		return
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.DoneCh():
			if err != nil {
				v.opts.Log.Warn("vault token renewal ended", zap.Error(err))
			} else {
				v.opts.Log.Info("vault token reached its max TTL; logging in again")
			}
			return
		case r := <-w.RenewCh():
			if r.Secret != nil && r.Secret.Auth != nil {
				v.mu.Lock()
				v.expires = v.opts.Now().Add(time.Duration(r.Secret.Auth.LeaseDuration) * time.Second)
				v.mu.Unlock()
			}
			v.event(Event{Type: "vault_renewed", Source: "vault", Ref: v.opts.Method})
		}
	}
}

func (v *Vault) event(ev Event) {
	if v.opts.OnEvent != nil {
		v.opts.OnEvent(ev)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Source returns a source for the secret at mount/path, KV version 1 or 2.
func (v *Vault) Source(mount, path string, kvVersion int) Source {
	return &vaultSource{v: v, mount: strings.Trim(mount, "/"), path: strings.Trim(path, "/"), kv: kvVersion}
}

type vaultSource struct {
	v     *Vault
	mount string
	path  string
	kv    int
}

func (s *vaultSource) Kind() string { return "vault" }
func (s *vaultSource) Ref() string  { return s.mount + "/" + s.path }

// Read reads the secret. A 403 is answered with one fresh login (the token
// may have expired) and one more read.
func (s *vaultSource) Read(ctx context.Context) (Reading, error) {
	return s.readVersion(ctx, 0)
}

// ReadVersion reads an earlier version of a KV v2 secret (?version=N).
func (s *vaultSource) ReadVersion(ctx context.Context, version int) (Reading, error) {
	if s.kv != 2 || version < 1 {
		return Reading{}, fmt.Errorf("vault %s: no version history (kv_version %d)", s.Ref(), s.kv)
	}
	return s.readVersion(ctx, version)
}

func (s *vaultSource) readVersion(ctx context.Context, version int) (Reading, error) {
	r, err := s.read(ctx, version)
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && s.v.relogin(ctx) {
		r, err = s.read(ctx, version)
	}
	return r, err
}

// read reads the newest version, or (KV v2) the one asked for.
func (s *vaultSource) read(ctx context.Context, want int) (Reading, error) {
	v := s.v
	v.mu.Lock()
	if !v.loggedIn {
		if err := v.loginLocked(ctx); err != nil {
			v.mu.Unlock()
			return Reading{}, fmt.Errorf("vault %s: not logged in: %w", s.Ref(), err)
		}
	}
	v.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, v.opts.Timeout)
	defer cancel()
	apiPath := s.mount + "/" + s.path
	if s.kv == 2 {
		apiPath = s.mount + "/data/" + s.path
	}
	var query map[string][]string
	if want > 0 {
		query = map[string][]string{"version": {strconv.Itoa(want)}}
	}
	sec, err := v.client.Logical().ReadWithDataWithContext(ctx, apiPath, query)
	if err != nil {
		return Reading{}, fmt.Errorf("vault %s: %w", s.Ref(), vaultErr(err))
	}
	if sec == nil || sec.Data == nil {
		return Reading{}, fmt.Errorf("vault %s: no secret at this mount and path (kv_version %d)", s.Ref(), s.kv)
	}
	data := sec.Data
	version := 0
	var created time.Time
	if s.kv == 2 {
		inner, ok := data["data"].(map[string]any)
		if !ok {
			return Reading{}, fmt.Errorf("vault %s: secret deleted or not a KV v2 secret (kv_version 2)", s.Ref())
		}
		if md, ok := data["metadata"].(map[string]any); ok {
			if n, ok := md["version"].(json.Number); ok {
				if i, err := n.Int64(); err == nil {
					version = int(i)
				}
			}
			if t, ok := md["created_time"].(string); ok {
				created, _ = time.Parse(time.RFC3339Nano, t)
			}
		}
		data = inner
	}
	fields := make(map[string]Secret, len(data))
	for k, val := range data {
		str, ok := val.(string)
		if !ok {
			return Reading{}, fmt.Errorf("vault %s: field %q is not a string", s.Ref(), k)
		}
		fields[k] = Secret(str)
	}
	exp, err := takeExpiresAt(fields)
	if err != nil {
		return Reading{}, fmt.Errorf("vault %s: %w", s.Ref(), err)
	}
	if exp.At.IsZero() && s.kv == 2 {
		exp = s.metadataExpiry(ctx, created, version)
	}
	return Reading{Fields: fields, Version: version, Expiry: exp, Created: created}, nil
}

// metadataExpiry reads the secret's KV v2 custom_metadata.expires_at. Vault
// keeps it per secret, not per version, and a rotation writes data and
// metadata separately, so the date may be the old version's. It is used
// only when the metadata was updated no earlier than the version was
// written, and, when custom_metadata.expires_at_version names the version
// it was written for, only for that version. (Vault moves updated_time on
// every data write too, so only expires_at_version really tells a stale
// date; README says so.) Unreadable metadata means no expiry from it; the
// read still succeeds.
func (s *vaultSource) metadataExpiry(ctx context.Context, created time.Time, version int) Expiry {
	md, err := s.v.client.Logical().ReadWithContext(ctx, s.mount+"/metadata/"+s.path)
	if err != nil || md == nil || md.Data == nil {
		return Expiry{}
	}
	custom, _ := md.Data["custom_metadata"].(map[string]any)
	raw, _ := custom[ExpiresAtField].(string)
	updatedRaw, _ := md.Data["updated_time"].(string)
	updated, err := time.Parse(time.RFC3339Nano, updatedRaw)
	if raw == "" || err != nil || updated.Before(created) {
		return Expiry{}
	}
	if v, ok := custom[ExpiresAtField+"_version"].(string); ok && v != strconv.Itoa(version) {
		return Expiry{}
	}
	at, err := time.Parse(time.RFC3339, raw)
	if err != nil {
		s.v.opts.Log.Warn("custom_metadata.expires_at is not an RFC 3339 time; ignored", zap.String("ref", s.Ref()))
		return Expiry{}
	}
	return Expiry{At: at, From: ExpiryMetadata}
}

// vaultErr shortens Vault API errors to status and Vault's messages, which
// name paths and causes but never values.
func vaultErr(err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		if re.StatusCode == http.StatusForbidden {
			msg = "permission denied (check keybroker's Vault policy, or the token expired)"
		}
		return &vaultError{status: re.StatusCode, msg: msg, err: re}
	}
	return err
}

type vaultError struct {
	status int
	msg    string
	err    *api.ResponseError
}

func (e *vaultError) Error() string { return fmt.Sprintf("vault answered %d: %s", e.status, e.msg) }
func (e *vaultError) Unwrap() error { return e.err }
