// Package assemble is the one hand-over from configuration to running
// parts: it turns a validated config.Config into the runtime types that
// proxy, callers, secrets and ratelimit declare themselves (none of them
// reads the YAML schema). Start, reload, validate --check-secrets and the
// tests all assemble through here, so they build keybroker the same way.
// It creates nothing long-lived and starts nothing: cmd/proxy owns the
// Vault client, the cache, the limiter and their lifetimes.
package assemble

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/oauth"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/secrets"
)

// Parts are what one configuration assembles into: everything a reload
// swaps at once.
type Parts struct {
	// Routes are what the proxy serves.
	Routes proxy.Routes
	// Specs are the credentials the cache keeps, one per upstream.
	Specs []secrets.Spec
	// Cache tunes the credential cache (refresh interval, max stale).
	Cache secrets.Options
	// Upstreams and Callers are the configured names (metric labels).
	Upstreams, Callers []string
	// JWTIssuers are the issuers of JWT callers' tokens (cmd/proxy makes
	// the verifier, which fetches their keys).
	JWTIssuers []jwtauth.IssuerConfig
	// OAuth are the client-credentials grants of OAuth upstreams, by
	// upstream name (TokenUpstreams makes their keepers' settings).
	OAuth map[string]oauth.Grant
}

// AuditSigningCredential is the cache name of the checkpoint signing key;
// no upstream can have it.
const AuditSigningCredential = "_audit_signing"

// TokenSigningCredential is the cache name of the key that signs
// keybroker's own OAuth tokens; no upstream can have it.
const TokenSigningCredential = "_oauth_token_signing"

// EgressCredential is the cache name of the egress proxy's credential; no
// upstream can have it.
const EgressCredential = "_egress_proxy"

// Env looks up an environment variable (env credential sources).
type Env func(string) (string, bool)

// Assemble builds the parts of cfg. vault is the client every Vault source
// reads through; it must be non-nil when cfg.UsesVault().
func Assemble(cfg *config.Config, vault *secrets.Vault, env Env) (Parts, error) {
	var p Parts
	proxied := false
	for i, u := range cfg.Upstreams {
		up, spec, err := upstream(u, vault, env)
		if err == nil {
			up.Egress, err = egressSettings(cfg, u)
		}
		if err != nil {
			return Parts{}, fmt.Errorf("upstreams[%d]: %w", i, err)
		}
		if up.Egress.Proxy != nil && cfg.Egress.ProxyCredential != nil {
			up.ProxyCredential = EgressCredential
		}
		up.Operations = cfg.Catalogue(u.Name)
		proxied = proxied || up.ProxyCredential != ""
		if a := u.Auth; a.Type == config.OAuthType {
			if p.OAuth == nil {
				p.OAuth = map[string]oauth.Grant{}
			}
			p.OAuth[u.Name] = oauth.Grant{TokenURL: a.TokenURL, Scopes: a.Scopes(), Basic: a.ClientAuth == "basic"}
			up.TokenPath = u.DropinTokenPath()
		}
		p.Routes.Upstreams = append(p.Routes.Upstreams, up)
		p.Specs = append(p.Specs, spec)
		p.Upstreams = append(p.Upstreams, u.Name)
	}
	if proxied {
		// The egress proxy's credential is read, refreshed and rotated like
		// a vendor's.
		src, err := source(*cfg.Egress.ProxyCredential, vault, env, "")
		if err != nil {
			return Parts{}, fmt.Errorf("egress.proxy_credential: %w", err)
		}
		p.Specs = append(p.Specs, secrets.Spec{Name: EgressCredential, Source: src, Required: []string{"username", "password"}})
	}
	if sg := cfg.Audit.Signing; sg != nil && sg.VaultTransit == nil {
		// The checkpoint signing key is read, refreshed and rotated like a
		// vendor credential (a transit key stays in Vault: cmd/proxy asks
		// it for signatures).
		src, err := source(sg.Credential, vault, env, "private_key")
		if err != nil {
			return Parts{}, fmt.Errorf("audit.signing.credential: %w", err)
		}
		p.Specs = append(p.Specs, secrets.Spec{Name: AuditSigningCredential, Source: src, Required: []string{"private_key"}})
	}
	if ts := cfg.OAuth.TokenSigning; ts != nil {
		// The token signing key is read, refreshed and rotated like a
		// vendor credential.
		src, err := source(*ts, vault, env, "key")
		if err != nil {
			return Parts{}, fmt.Errorf("oauth.token_signing: %w", err)
		}
		p.Specs = append(p.Specs, secrets.Spec{Name: TokenSigningCredential, Source: src, Required: []string{"key"}})
	}
	var cs []callers.Caller
	var err error
	for _, c := range cfg.Callers {
		cs = append(cs, caller(c))
		p.Callers = append(p.Callers, c.Name)
		if c.RateLimit != nil {
			if p.Routes.CallerQuotas == nil {
				p.Routes.CallerQuotas = map[string]proxy.CallerLimit{}
			}
			p.Routes.CallerQuotas[c.Name] = proxy.CallerLimit{Quota: Quota(c.RateLimit), MaxWait: MaxWait(c.RateLimit)}
		}
	}
	if p.JWTIssuers, err = jwtIssuers(cfg.Callers); err != nil {
		return Parts{}, err
	}
	reg, err := callers.NewRegistry(cs, cfg.AllowAnonymous)
	if err != nil {
		return Parts{}, err
	}
	s := cfg.Server
	p.Routes.Callers = reg
	p.Routes.ReportOnly = cfg.PolicyMode == "report"
	p.Routes.MaxHeaderCount = s.MaxHeaderCount
	p.Routes.ReadBodyTimeout = s.ReadBodyTimeout.D()
	p.Routes.ClientCerts = cfg.TLS != nil && cfg.TLS.ClientCAFile != ""
	p.Routes.Unidentified = proxy.UnidentifiedLimits{
		PerSource: halfAtOnce(s.Unidentified.PerSource),
		Total:     halfAtOnce(s.Unidentified.Total),
	}
	p.Routes.RefusalsPerCaller = halfAtOnce(s.Refusals.PerCaller)
	p.Cache = secrets.Options{RefreshInterval: cfg.Secrets.RefreshInterval.D(), MaxStale: cfg.Secrets.MaxStale.D(),
		ExpiryWarning: cfg.Secrets.ExpiryWarning.D()}
	return p, nil
}

func upstream(u config.Upstream, vault *secrets.Vault, env Env) (proxy.Upstream, secrets.Spec, error) {
	scheme, err := Scheme(u)
	if err != nil {
		return proxy.Upstream{}, secrets.Spec{}, err
	}
	up := proxy.Upstream{
		Name:            u.Name,
		Target:          u.TargetURL(),
		Auth:            scheme,
		Timeout:         u.Timeout.D(),
		MaxRequestBytes: u.MaxRequestBytes,
		MaxWait:         config.DefaultMaxWait,
		VendorPause:     u.VendorPause(),
		RewriteLinks:    u.RewriteLinks,
	}
	if u.RateLimit != nil {
		up.Quota, up.MaxWait = Quota(u.RateLimit), MaxWait(u.RateLimit)
	}
	if u.Probe != nil {
		up.Probe = &proxy.Probe{Method: u.Probe.Method, Path: u.Probe.Path}
	}
	up.DefaultHeaders = u.DefaultHeaders()
	single := ""
	if f := scheme.Fields(); len(f) == 1 {
		single = f[0]
	}
	src, err := source(u.Credential, vault, env, single)
	if err != nil {
		return proxy.Upstream{}, secrets.Spec{}, fmt.Errorf("credential: %w", err)
	}
	return up, secrets.Spec{Name: u.Name, Source: src, Required: scheme.Fields(), Lifetime: u.Credential.Lifetime.D()}, nil
}

// source is the credential source a configured credential names; single
// is the field an env source's bare value fills.
func source(cr config.Credential, vault *secrets.Vault, env Env, single string) (secrets.Source, error) {
	switch {
	case cr.Vault != nil:
		if vault == nil {
			return nil, errors.New("vault: no Vault client (vault: is not configured)")
		}
		return vault.Source(cr.Vault.Mount, cr.Vault.Path, cr.Vault.KVVersion), nil
	case cr.File != nil:
		return secrets.NewFileSource(cr.File.Path), nil
	case cr.Env != nil:
		return secrets.NewEnvSource(env, cr.Env.Key, cr.Env.Fields, single), nil
	}
	return nil, errors.New("no source")
}

// egressSettings is how upstream u is reached: its proxy (https only), the
// CAs that verify the vendor, the phase timeouts.
func egressSettings(cfg *config.Config, u config.Upstream) (egress.Settings, error) {
	g := cfg.Egress
	e := egress.Settings{DialTimeout: g.DialTimeout.D(), ConnectTimeout: g.ConnectTimeout.D(),
		TLSHandshakeTimeout: g.TLSHandshakeTimeout.D(), IdleTimeout: g.IdleTimeout.D()}
	if p := u.EgressProxy(g); p != "" {
		pu, err := url.Parse(p)
		if err != nil {
			return e, fmt.Errorf("egress.proxy: %w", err)
		}
		e.Proxy = pu
	}
	if ca := u.EgressCAFile(g); ca != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		extra, err := os.ReadFile(ca)
		if err != nil || !pool.AppendCertsFromPEM(extra) {
			return e, fmt.Errorf("egress.ca_file: no PEM certificate read from %s", ca)
		}
		e.RootCAs, e.CAFile = pool, ca
	}
	return e, nil
}

// Scheme builds an upstream's auth scheme: the one place that knows the
// auth types by name. The preset's extra drop-in slots join the scheme's.
func Scheme(u config.Upstream) (proxy.Scheme, error) {
	a := u.Auth
	var s proxy.Scheme
	switch a.Type {
	case "basic":
		s = proxy.BasicAuth(a.UsernameField, a.PasswordField)
	case "header":
		s = proxy.HeaderAuth(a.Header, a.Prefix, a.Field)
	case "query":
		s = proxy.QueryAuth(a.Param, a.Field)
	case config.OAuthType:
		s = oauth.Bearer()
	default:
		return nil, fmt.Errorf("auth.type: %q is not an auth type", a.Type)
	}
	return proxy.WithDropin(s, u.DropinHeaders(), u.DropinParams()), nil
}

// TokenUpstreams are the OAuth upstreams of p as their token keepers need
// them: the grant, and the token endpoint reached the way the vendor is
// (its egress settings, the egress proxy's credential read with get).
func TokenUpstreams(p Parts, get func(ctx context.Context, name string) (secrets.Credential, error)) []oauth.Upstream {
	var out []oauth.Upstream
	for _, up := range p.Routes.Upstreams {
		g, ok := p.OAuth[up.Name]
		if !ok {
			continue
		}
		target := *up.Target
		if u, err := target.Parse(g.TokenURL); err == nil {
			target = *u
		}
		at := up
		at.Target = &target
		if at.Timeout <= 0 {
			at.Timeout = proxy.DefaultTimeout
		}
		out = append(out, oauth.Upstream{Name: up.Name, Grant: g, TokenURL: &target, Dialer: proxy.NewDialer(at, get),
			Timeout: at.Timeout, Key: fmt.Sprint(g, at.TransportKey())})
	}
	return out
}

// Quota turns a configured rate_limit into the limiter's quota.
func Quota(rl *config.RateLimit) ratelimit.Quota {
	l := ratelimit.Quota{Requests: rl.Requests, Per: rl.Per.D(), Burst: rl.Burst}
	if rl.Shares != nil {
		m := make(map[string]ratelimit.Share, len(rl.Shares))
		for name, sh := range rl.Shares {
			m[name] = ratelimit.Share{Reserve: sh.Reserve, Max: sh.Max, Weight: sh.Weight}
		}
		l.Shares = ratelimit.NewShares(m)
	}
	return l
}

// MaxWait is how long a call may wait for a slot of a configured
// rate_limit (max_wait, else the default).
func MaxWait(rl *config.RateLimit) time.Duration {
	if rl.MaxWait != nil {
		return rl.MaxWait.D()
	}
	return config.DefaultMaxWait
}

// halfAtOnce turns a quota into a limit of which half may come at once.
func halfAtOnce(q *config.Quota) ratelimit.Quota {
	if q == nil {
		return ratelimit.Quota{}
	}
	return ratelimit.Quota{Requests: q.Requests, Per: q.Per.D(), Burst: max(1, q.Requests/2)}
}

// jwtIssuers are the issuers JWT callers name, each with its callers'
// audiences.
func jwtIssuers(cs []config.Caller) ([]jwtauth.IssuerConfig, error) {
	var out []jwtauth.IssuerConfig
	index := map[string]int{}
	for i, c := range cs {
		j := c.JWT
		if j == nil {
			continue
		}
		if k, ok := index[j.Issuer]; ok {
			if !slices.Contains(out[k].Audiences, j.Audience) {
				out[k].Audiences = append(out[k].Audiences, j.Audience)
			}
			continue
		}
		ic := jwtauth.IssuerConfig{Issuer: j.Issuer, Audiences: []string{j.Audience}, JWKSURL: j.JWKSURL, JWKSFile: j.JWKSFile,
			TokenFile: j.TokenFile, MaxLifetime: j.MaxLifetime.D()}
		if j.Leeway != nil {
			ic.Leeway = j.Leeway.D()
		}
		if j.CAFile != "" {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			pem, err := os.ReadFile(j.CAFile)
			if err != nil || !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("callers[%d].jwt.ca_file: no PEM certificate read from %s", i, j.CAFile)
			}
			ic.RootCAs = pool
		}
		index[j.Issuer] = len(out)
		out = append(out, ic)
	}
	return out, nil
}

// Callers is the configuration's caller registry alone, for questions
// asked of the policy without a running instance (keybroker policy).
func Callers(cfg *config.Config) (*callers.Registry, error) {
	cs := make([]callers.Caller, 0, len(cfg.Callers))
	for _, c := range cfg.Callers {
		cs = append(cs, caller(c))
	}
	return callers.NewRegistry(cs, cfg.AllowAnonymous)
}

func caller(c config.Caller) callers.Caller {
	cl := callers.Caller{Name: c.Name, KeySHA256: c.KeyHash()}
	if j := c.JWT; j != nil {
		cl.JWT = &callers.JWTMatch{Issuer: j.Issuer, Audience: j.Audience, Subject: j.Subject, Claims: j.Claims}
	}
	if m := c.ClientCert; m != nil {
		cl.Cert = &callers.CertMatch{CommonName: m.CommonName, DNS: m.DNS, URI: m.URI}
	}
	if c.Allow != nil {
		cl.Allow = []callers.Rule{}
		for _, a := range c.Allow {
			cl.Allow = append(cl.Allow, callers.Rule{Upstream: a.Upstream, Methods: a.Methods, Paths: a.Paths, Operations: a.Operations, Tiers: a.Tiers})
		}
	}
	return cl
}

// VaultOptions resolves the Vault client's options: the token from its
// file or, for method token without a file, VAULT_TOKEN (the only place
// keybroker reads a Vault variable), and vault.ca_file.
func VaultOptions(v config.Vault, env Env) (secrets.VaultOptions, error) {
	o := secrets.VaultOptions{
		Address: v.Address, Namespace: v.Namespace, Method: v.Auth.Method,
		TokenFile: v.Auth.TokenFile, Mount: v.Auth.Mount, RoleID: v.Auth.RoleID,
		SecretIDFile: v.Auth.SecretIDFile, Role: v.Auth.Role, JWTFile: v.Auth.JWTFile,
	}
	if tok, ok := env("VAULT_TOKEN"); ok {
		o.Token = tok
	}
	if v.CAFile != "" {
		pool, err := CAPool(v.CAFile, "vault.ca_file")
		if err != nil {
			return o, err
		}
		o.RootCAs = pool
	}
	return o, nil
}

// CAPool reads a PEM CA bundle; field names the setting in errors.
func CAPool(path, field string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in %s", field, strings.TrimSpace(path))
	}
	return pool, nil
}
