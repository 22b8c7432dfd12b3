package main

// parts.go builds keybroker's long-lived parts from a configuration: build
// at start, apply on a reload. Both go through assemble.Assemble and the
// same helpers here, so a reload is the start's road, entered once.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/metrics"
	"github.com/keybroker/keybroker/internal/oauth"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/secrets"
)

// replicaName is audit.replica, else the host name.
func replicaName(cfg *config.Config) string {
	if cfg.Audit.Replica != "" {
		return cfg.Audit.Replica
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "keybroker"
	}
	return h
}

// build creates the long-lived parts, in one order: audit, Vault (when the
// configuration uses it), metrics, limiter, then the assembled parts, the
// credential cache and the proxy. It starts nothing; run does.
func build(cfg *config.Config, log *zap.Logger) (*app, error) {
	a := &app{cfg: cfg, log: log, minFree: cfg.Audit.MinFreeBytes}
	var err error
	if cfg.Audit.Path == "" {
		a.auditor = audit.NewWriter(os.Stdout)
	} else {
		sync, err := audit.ParseSync(cfg.Audit.Sync)
		if err != nil {
			return nil, fmt.Errorf("audit.sync: %w", err)
		}
		if a.auditor, err = audit.OpenWith(cfg.Audit.Path, audit.Options{Sync: sync, Replica: replicaName(cfg)}); err != nil {
			return nil, err
		}
	}
	a.closers = append(a.closers, func() { _ = a.auditor.Close() })
	if cfg.Audit.Signing != nil {
		a.checkpoints = &checkpointer{a: a, cfg: *cfg.Audit.Signing}
	}

	if cfg.UsesVault() {
		v, err := a.newVault(cfg.Vault)
		if err != nil {
			a.close()
			return nil, err
		}
		a.vault.Store(v)
	}
	a.metrics = metrics.New(nil, nil, metrics.State{
		Health: func(upstreams []string) metrics.Health { return a.health(upstreams).Health },
	})
	upstreamLimiter, err := a.upstreamLimiter()
	if err != nil {
		a.close()
		return nil, err
	}
	parts, err := assemble.Assemble(cfg, a.vault.Load().client(), os.LookupEnv)
	if err != nil {
		a.close()
		return nil, err
	}
	a.metrics.SetNames(parts.Upstreams, parts.Callers)
	cache, err := a.newCache(parts)
	if err != nil {
		a.close()
		return nil, err
	}
	a.creds.cur.Store(cache)
	a.tokens = oauth.NewCredentials(oauth.CredentialsOptions{Source: &a.creds, OnFetch: a.tokenFetched})
	a.tokens.Update(assemble.TokenUpstreams(parts, a.creds.Get))
	a.closers = append(a.closers, a.tokens.Close)
	a.jwt.Store(jwtauth.New(parts.JWTIssuers, a.jwtOptions(), nil))
	a.closers = append(a.closers, func() { a.jwt.Load().Close(nil) })
	parts.Routes.JWT = a.jwt.Load()
	a.proxy, err = proxy.New(parts.Routes, proxy.Options{
		Credentials:            a.tokens,
		Auditor:                a.auditor,
		UpstreamLimiter:        upstreamLimiter,
		Hooks:                  proxyHooks(a.metrics),
		Log:                    log.Named("proxy"),
		SummaryInterval:        cfg.Server.Unidentified.SummaryInterval.D(),
		RefusalSummaryInterval: cfg.Server.Refusals.SummaryInterval.D(),
		Tokens:                 oauth.NewIssuer(a.tokenSigningKey(), cfg.OAuth.DropinTokenTTL.D(), nil),
	})
	if err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// jwtOptions are the JWT verifier's: its log, and its key loads counted.
func (a *app) jwtOptions() jwtauth.Options {
	return jwtauth.Options{Log: a.log.Named("jwt"), OnLoad: a.metrics.IssuerKeysLoaded}
}

// tokenSigningKey reads the key of keybroker's own OAuth tokens from the
// credential cache (oauth.token_signing); nil when none is configured:
// the issuer then makes a random one that only this process knows.
func (a *app) tokenSigningKey() oauth.KeyFunc {
	if a.cfg.OAuth.TokenSigning == nil {
		return nil
	}
	return func(ctx context.Context, reread bool) (oauth.SigningKey, error) {
		get := a.creds.Get
		if reread {
			get = a.creds.Reread
		}
		c, err := get(ctx, assemble.TokenSigningCredential)
		if err != nil {
			return oauth.SigningKey{}, err
		}
		k, err := c.Field("key")
		return oauth.SigningKey{Secret: []byte(k.Reveal()), Version: c.Version}, err
	}
}

// vaultClient is a Vault client with its token-keeping loop.
type vaultClient struct {
	*secrets.Vault
	cfg  config.Vault
	stop func() // ends Run; nil until started
}

// newVault makes a Vault client for settings v. It does not log in: its
// Run does, and retries, so that keybroker starts (unready) while Vault is
// down and becomes ready when it is back.
func (a *app) newVault(v config.Vault) (*vaultClient, error) {
	opts, err := assemble.VaultOptions(v, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	opts.Log = a.log.Named("vault")
	opts.OnEvent = func(ev secrets.Event) {
		a.event(audit.Event{Name: ev.Type, Source: ev.Source, Ref: ev.Ref, Detail: ev.Error})
	}
	c, err := secrets.NewVault(opts)
	if err != nil {
		return nil, err
	}
	return &vaultClient{Vault: c, cfg: v}, nil
}

// client is the Vault client, nil for none.
func (v *vaultClient) client() *secrets.Vault {
	if v == nil {
		return nil
	}
	return v.Vault
}

// start runs v's token loop until its stop is called.
func (a *app) startVault(v *vaultClient) {
	if v != nil && v.stop == nil {
		v.stop = a.background(v.Run)
	}
}

func (a *app) newCache(p assemble.Parts) (*secrets.Cache, error) {
	opts := p.Cache
	opts.Log = a.log.Named("secrets")
	opts.OnEvent = a.credentialEvent
	// A rotated credential is proved before it is served: by an OAuth
	// upstream's token endpoint, and by its upstream's probe. The proxy is
	// made after the cache, and is there by the time a rotation comes
	// (the first load proves nothing).
	opts.Prove = func(ctx context.Context, name string, c secrets.Credential) (secrets.Proof, secrets.Verdict) {
		if a.proxy == nil {
			return secrets.Unprovable, secrets.Verdict{}
		}
		return a.tokens.Prove(ctx, name, c, a.proxy.Probe)
	}
	return secrets.NewCache(p.Specs, opts)
}

// upstreamLimiter keeps vendor quotas: locally, or in Redis for replicas.
func (a *app) upstreamLimiter() (proxy.Limiter, error) {
	rl := a.cfg.RateLimit
	if rl.Backend != "redis" {
		w := ratelimit.NewWindow(nil, rl.Margin.D())
		a.quotaUsage, a.shareUsage = w.Usage, w.ShareUsage
		return w, nil
	}
	password := ""
	if rl.Redis.PasswordFile != "" {
		b, err := os.ReadFile(rl.Redis.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("ratelimit.redis.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	ratelimit.RouteRedisLogs(a.log.Named("redis"))
	r := ratelimit.NewRedis(ratelimit.RedisOptions{
		Address: rl.Redis.Address, Password: password, TLS: rl.Redis.TLS, Replicas: rl.Replicas, Margin: rl.Margin.D(),
		Log: a.log.Named("ratelimit"),
		OnFallback: func(on bool, reason string) {
			name := "limiter_recovered"
			if on {
				name = "limiter_fallback"
			}
			a.event(audit.Event{Name: name, Detail: reason})
		},
	})
	a.redisLimiter = r
	a.quotaUsage, a.shareUsage = r.Usage, r.ShareUsage
	a.closers = append(a.closers, func() { _ = r.Close() })
	return r, nil
}

// background runs f until the returned stop is called (or run ends).
func (a *app) background(f func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(a.bg)
	done := make(chan struct{})
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(done)
		_ = f(ctx)
	}()
	return func() { cancel(); <-done }
}

// apply makes cfg the running configuration: restart-only check, Vault
// client (kept, made, re-made or dropped), assembly, new credentials loaded
// and ready; then, with every fallible step done, the swap; then the old
// cache and Vault client are stopped.
func (a *app) apply(cfg *config.Config) error {
	if f := restartOnlyChanges(a.cfg, cfg); len(f) > 0 {
		return fmt.Errorf("%s changed: only a restart applies it; restart keybroker", strings.Join(f, ", "))
	}
	old := a.vault.Load()
	next := old
	switch {
	case !cfg.UsesVault():
		next = nil
	case old == nil || !reflect.DeepEqual(old.cfg, cfg.Vault):
		v, err := a.newVault(cfg.Vault)
		if err != nil {
			return err
		}
		a.startVault(v)
		next = v
	}
	abandon := func() {
		if next != old && next != nil {
			next.stop()
		}
	}
	parts, err := assemble.Assemble(cfg, next.client(), os.LookupEnv)
	if err != nil {
		abandon()
		return err
	}
	var cache *secrets.Cache
	var stopCache func()
	if next != old || !sameCredentials(a.cfg, cfg) {
		if cache, err = a.newCache(parts); err != nil {
			abandon()
			return err
		}
		stopCache = a.background(cache.Run)
		ctx, cancel := context.WithTimeout(a.bg, reloadWait)
		err = waitLoaded(ctx, cache)
		cancel()
		if err != nil {
			stopCache()
			abandon()
			return err
		}
	}

	// The swap. New credentials first, so that a new upstream has its
	// credential the moment it is routed.
	var oldCache *secrets.Cache
	if cache != nil {
		oldCache = a.creds.cur.Swap(cache)
	}
	// JWT issuers whose settings did not change keep their keys; a
	// jwks_file is read again (a reload is how a changed file is taken
	// at once).
	oldJWT := a.jwt.Load()
	jwt := jwtauth.New(parts.JWTIssuers, a.jwtOptions(), oldJWT)
	jwt.RereadFiles(a.bg)
	parts.Routes.JWT = jwt
	retireTokens := a.tokens.Update(assemble.TokenUpstreams(parts, a.creds.Get))
	if err := a.proxy.Update(parts.Routes); err != nil {
		jwt.Close(oldJWT)
		if cache != nil {
			a.creds.cur.Store(oldCache)
			stopCache()
		}
		abandon()
		return err
	}
	retireTokens()
	oldJWT.Close(jwt)
	a.jwt.Store(jwt)
	a.vault.Store(next)
	a.metrics.SetNames(parts.Upstreams, parts.Callers)
	a.cfg = cfg

	// The old parts end; calls in flight hold their credential already.
	if cache != nil {
		a.stopCache()
		a.stopCache = stopCache
	}
	if old != nil && old != next {
		old.stop()
	}
	return nil
}

// liveCredentials is the proxy's view of the credential cache; a reload
// that changes credential sources swaps the cache under it.
type liveCredentials struct {
	cur atomic.Pointer[secrets.Cache]
}

func (l *liveCredentials) current() *secrets.Cache { return l.cur.Load() }

func (l *liveCredentials) Get(ctx context.Context, upstream string) (secrets.Credential, error) {
	return l.cur.Load().Get(ctx, upstream)
}

func (l *liveCredentials) Reread(ctx context.Context, upstream string) (secrets.Credential, error) {
	return l.cur.Load().Reread(ctx, upstream)
}

func (l *liveCredentials) Refused(ctx context.Context, upstream string, used int) (secrets.Credential, error) {
	return l.cur.Load().Refused(ctx, upstream, used)
}

// waitLoaded waits until every credential of c is loaded, or ctx ends.
func waitLoaded(ctx context.Context, c *secrets.Cache) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ok, sts := c.Ready()
		if ok {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			for _, s := range sts {
				if !s.Loaded || s.Expired {
					return fmt.Errorf("credential for upstream %s (%s %s) could not be loaded: %s", s.Name, s.Source, s.Ref, s.LastErr)
				}
			}
			return errors.New("credentials could not be loaded")
		}
	}
}

// sameCredentials reports whether the credential cache can stay as it is.
func sameCredentials(old, cur *config.Config) bool {
	type cred struct {
		name   string
		source config.Credential
		auth   config.Auth
	}
	summary := func(c *config.Config) []cred {
		var out []cred
		for _, u := range c.Upstreams {
			out = append(out, cred{u.Name, u.Credential, u.Auth})
		}
		return out
	}
	return old.Secrets == cur.Secrets && reflect.DeepEqual(summary(old), summary(cur)) &&
		reflect.DeepEqual(old.Egress.ProxyCredential, cur.Egress.ProxyCredential) &&
		reflect.DeepEqual(old.Audit.Signing, cur.Audit.Signing)
}

// proxyHooks tells m what the proxy does.
func proxyHooks(m *metrics.Metrics) proxy.Hooks {
	return proxy.Hooks{
		CallStarted: m.CallStarted, CallFinished: m.CallFinished,
		LinkDropped: m.LinkDropped, TLSHandshakeFailed: m.TLSHandshakeFailed,
		TokenRequested:    m.TokenRequested,
		RefusalUnrecorded: m.RefusalUnrecorded,
	}
}

// tokenFetched counts a vendor token fetch, and writes the events of a
// credential version's first token, and of a failure after success and
// the recovery: never the token.
func (a *app) tokenFetched(f oauth.Fetch) {
	a.metrics.VendorTokenFetched(f.Upstream, f.Reason, f.Result())
	ev, ok := f.Event()
	if !ok {
		return
	}
	if f.Err != nil {
		a.log.Warn("vendor token fetch failed", zap.String("upstream", f.Upstream), zap.String("reason", f.Reason),
			zap.String("error", f.Err.Msg))
	}
	a.event(ev)
}
