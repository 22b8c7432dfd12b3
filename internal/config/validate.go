package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
)

// Defaults, in one place.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultAdminListen     = "127.0.0.1:9090"
	DefaultRefresh         = time.Minute
	DefaultMaxStale        = time.Hour
	MinRefresh             = time.Second
	DefaultTimeout         = 30 * time.Second
	DefaultMaxRequestBytes = 10 << 20
	DefaultMaxWait         = 10 * time.Second
	DefaultMargin          = 25 * time.Millisecond
	DefaultMaxHeaderBytes  = 64 << 10
	DefaultMaxHeaderCount  = 100
	DefaultReadHeader      = 10 * time.Second
	DefaultIdle            = 2 * time.Minute
	DefaultShutdown        = 30 * time.Second
	DefaultReadBody        = 60 * time.Second
	DefaultMaxConnections  = 4096
	MaxMaxHeaderBytes      = 1 << 20
	DefaultMinFreeBytes    = 128 << 20
	DefaultJWTFile         = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultRedisAddress    = "127.0.0.1:6379"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// headerTokenRE is RFC 9110's token, the form of a header name or a method.
var headerTokenRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// linkPathRE is a rewrite_links entry: object keys joined by dots.
var linkPathRE = regexp.MustCompile(`^[A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*$`)

// errs collects validation errors so that one run reports all of them.
type errs struct {
	list []*FieldError
	// skipFiles: the files the configuration names are not opened
	// (validate --skip-files); unchecked lists them, by field path.
	skipFiles bool
	unchecked []string
}

func (e *errs) add(path, format string, args ...any) {
	e.list = append(e.list, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (c *Config) complete(env LookupEnv, skipFiles bool) *errs {
	e := &errs{skipFiles: skipFiles}
	def(&c.Listen, DefaultListen)
	def(&c.Admin.Listen, DefaultAdminListen)
	checkAddr(e, "listen", c.Listen)
	checkAddr(e, "admin.listen", c.Admin.Listen)
	if c.Listen == c.Admin.Listen && !strings.HasSuffix(c.Listen, ":0") {
		e.add("admin.listen", "must differ from listen")
	}
	c.completeTLS(e)
	c.completeSecrets(e)
	c.completeUpstreams(e)
	c.completeOperations(e)
	c.completeEgress(e)
	if c.UsesVault() {
		c.completeVault(e, env)
	}
	c.completeCallers(e)
	c.completeOAuth(e)
	c.completeRest(e)
	return e
}

func (c *Config) completeEgress(e *errs) {
	g := &c.Egress
	checkProxy := func(path, p string) {
		if p == "" {
			return
		}
		u, err := url.Parse(p)
		switch {
		case err != nil || u.Scheme != "http" || u.Host == "" || u.Port() == "":
			e.add(path, "must be http://host:port (the CONNECT proxy)")
		case u.User != nil:
			e.add(path, "must not carry credentials; use egress.proxy_credential")
		case (u.Path != "" && u.Path != "/") || u.RawQuery != "":
			e.add(path, "must have no path or query")
		}
	}
	checkProxy("egress.proxy", g.Proxy)
	if g.CAFile != "" {
		checkReadable(e, "egress.ca_file", g.CAFile)
	}
	if g.ProxyCredential != nil {
		checkCredential(e, "egress.proxy_credential", g.ProxyCredential)
	}
	for i, u := range c.Upstreams {
		if u.Egress == nil {
			continue
		}
		p := fmt.Sprintf("upstreams[%d].egress", i)
		if u.Egress.Proxy != nil {
			checkProxy(p+".proxy", *u.Egress.Proxy)
		}
		if u.Egress.CAFile != nil && *u.Egress.CAFile != "" {
			checkReadable(e, p+".ca_file", *u.Egress.CAFile)
		}
	}
	defDur(&g.DialTimeout, 10*time.Second)
	defDur(&g.ConnectTimeout, 10*time.Second)
	defDur(&g.TLSHandshakeTimeout, 10*time.Second)
	defDur(&g.IdleTimeout, 90*time.Second)
	for _, d := range []struct {
		path string
		v    Duration
	}{{"egress.dial_timeout", g.DialTimeout}, {"egress.connect_timeout", g.ConnectTimeout},
		{"egress.tls_handshake_timeout", g.TLSHandshakeTimeout}, {"egress.idle_timeout", g.IdleTimeout}} {
		if d.v.D() < 100*time.Millisecond {
			e.add(d.path, "must be at least 100ms")
		}
	}
}

func (c *Config) completeTLS(e *errs) {
	if c.TLS == nil {
		return
	}
	if c.TLS.CertFile == "" {
		e.add("tls.cert_file", "required with tls")
	}
	if c.TLS.KeyFile == "" {
		e.add("tls.key_file", "required with tls")
	}
	for path, f := range map[string]string{"tls.cert_file": c.TLS.CertFile, "tls.key_file": c.TLS.KeyFile, "tls.client_ca_file": c.TLS.ClientCAFile} {
		if f != "" {
			checkReadable(e, path, f)
		}
	}
}

func (c *Config) completeSecrets(e *errs) {
	s := &c.Secrets
	defDur(&s.RefreshInterval, DefaultRefresh)
	defDur(&s.MaxStale, DefaultMaxStale)
	if s.RefreshInterval.D() < MinRefresh {
		e.add("secrets.refresh_interval", "must be at least %s", MinRefresh)
	}
	if s.MaxStale.D() < s.RefreshInterval.D() {
		e.add("secrets.max_stale", "must be at least refresh_interval")
	}
	defDur(&s.ExpiryWarning, 30*24*time.Hour)
	if s.ExpiryWarning.D() < 0 {
		e.add("secrets.expiry_warning", "must not be negative")
	}
}

func (c *Config) completeVault(e *errs, env LookupEnv) {
	v := &c.Vault
	if v.Address == "" {
		v.Address, _ = env("VAULT_ADDR")
	}
	if v.Address == "" {
		e.add("vault.address", "required when an upstream reads from vault (or set VAULT_ADDR)")
	} else if u, err := url.Parse(v.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		e.add("vault.address", "must be an http:// or https:// URL")
	}
	if v.CAFile != "" {
		checkReadable(e, "vault.ca_file", v.CAFile)
	}
	a := &v.Auth
	def(&a.Method, "token")
	def(&a.Mount, a.Method)
	switch a.Method {
	case "token":
		if a.TokenFile == "" {
			if t, _ := env("VAULT_TOKEN"); t == "" {
				e.add("vault.auth.token_file", "required for method token (or set VAULT_TOKEN)")
			}
		}
	case "approle":
		if a.RoleID == "" {
			e.add("vault.auth.role_id", "required for method approle")
		}
		if a.SecretIDFile == "" {
			e.add("vault.auth.secret_id_file", "required for method approle")
		}
	case "kubernetes":
		if a.Role == "" {
			e.add("vault.auth.role", "required for method kubernetes")
		}
		def(&a.JWTFile, DefaultJWTFile)
	default:
		e.add("vault.auth.method", "must be token, approle or kubernetes")
	}
}

func (c *Config) completeUpstreams(e *errs) {
	if len(c.Upstreams) == 0 {
		e.add("upstreams", "at least one upstream is required")
	}
	seen := map[string]bool{}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		p := fmt.Sprintf("upstreams[%d]", i)
		checkName(e, p+".name", u.Name, "upstream", " (it is the path prefix)", seen)

		hint, unknownPreset := "", false
		if u.Preset != "" {
			pr, ok := presets[u.Preset]
			if !ok {
				unknownPreset = true
				e.add(p+".preset", "unknown preset %s%s (known: %s)", quote(u.Preset), didYouMean(u.Preset, presetNames()), strings.Join(presetNames(), ", "))
			} else {
				applyPreset(u, pr)
				hint = pr.urlHint
			}
		}
		if !unknownPreset {
			// A misspelt preset would have filled these: no cascade.
			checkUpstreamURL(e, p+".url", u.URL, hint)
			checkAuth(e, p+".auth", &u.Auth)
		}
		checkCredential(e, p+".credential", &u.Credential)
		if u.RateLimit != nil {
			checkRateLimit(e, p+".rate_limit", u.RateLimit, true)
		}
		defDur(&u.Timeout, DefaultTimeout)
		if u.Timeout.D() < time.Second {
			e.add(p+".timeout", "must be at least 1s")
		}
		if u.MaxRequestBytes == 0 {
			u.MaxRequestBytes = DefaultMaxRequestBytes
		} else if u.MaxRequestBytes < 0 {
			e.add(p+".max_request_bytes", "must be positive")
		}
		for j, l := range u.RewriteLinks {
			if !linkPathRE.MatchString(l) {
				e.add(fmt.Sprintf("%s.rewrite_links[%d]", p, j), "must be dotted JSON object keys, such as pagination.next_page_url")
			}
		}
		if pr := u.Probe; pr != nil {
			if pr.Method == "" {
				pr.Method = http.MethodGet
			}
			pr.Method = strings.ToUpper(pr.Method)
			if pr.Method != http.MethodGet && pr.Method != http.MethodHead {
				e.add(p+".probe.method", "must be GET or HEAD: a probe only reads")
			}
			if !strings.HasPrefix(pr.Path, "/") {
				e.add(p+".probe.path", "required: a path below the upstream's URL, such as /v1/account")
			}
		}
	}
}

func checkUpstreamURL(e *errs, path, raw, hint string) *url.URL {
	if raw == "" {
		if hint != "" {
			e.add(path, "required (for this preset: %s)", hint)
		} else {
			e.add(path, "required")
		}
		return nil
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		e.add(path, "must be an absolute http(s) URL")
		return nil
	case u.User != nil:
		e.add(path, "must not carry credentials; use credential:")
		return nil
	case u.RawQuery != "" || u.Fragment != "":
		e.add(path, "must not have a query or fragment")
		return nil
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		// Plain HTTP only to this machine (tests, a local sidecar):
		// a vendor credential never crosses a network in clear text.
	case u.Scheme == "http":
		e.add(path, "must be https (http is allowed only to a loopback address)")
		return nil
	default:
		e.add(path, "must be an http(s) URL")
		return nil
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authFields are the fields each auth type requires: the schema's only
// knowledge of auth types (how each injects is the proxy's Scheme).
var authFields = map[string][]string{
	"basic":  {"username_field", "password_field"},
	"header": {"header", "field"},
	"query":  {"param", "field"},
	// The credential has client_id and client_secret; the token is the
	// vendor's (oauth.go).
	OAuthType: {"token_url"},
}

func checkAuth(e *errs, path string, a *Auth) {
	need, ok := authFields[a.Type]
	switch {
	case a.Type == "":
		e.add(path+".type", "required (basic, header, query or %s), or use a preset", OAuthType)
	case !ok:
		e.add(path+".type", "must be basic, header, query or %s", OAuthType)
	}
	set := map[string]string{"username_field": a.UsernameField, "password_field": a.PasswordField,
		"header": a.Header, "field": a.Field, "param": a.Param, "token_url": a.TokenURL}
	for _, f := range need {
		if set[f] == "" {
			e.add(path+"."+f, "required for type %s", a.Type)
		}
	}
	if a.Header != "" && !headerTokenRE.MatchString(a.Header) {
		e.add(path+".header", "not a valid header name")
	}
	a.Header = http.CanonicalHeaderKey(a.Header)
	checkOAuthAuth(e, path, a)
}

func checkCredential(e *errs, path string, c *Credential) {
	if c.Lifetime.D() < 0 {
		e.add(path+".lifetime", "must not be negative")
	}
	n := 0
	if c.Vault != nil {
		n++
		if c.Vault.Mount == "" {
			e.add(path+".vault.mount", "required")
		}
		if c.Vault.Path == "" {
			e.add(path+".vault.path", "required")
		}
		c.Vault.Mount = strings.Trim(c.Vault.Mount, "/")
		c.Vault.Path = strings.Trim(c.Vault.Path, "/")
		if c.Vault.KVVersion == 0 {
			c.Vault.KVVersion = 2
		} else if c.Vault.KVVersion != 1 && c.Vault.KVVersion != 2 {
			e.add(path+".vault.kv_version", "must be 1 or 2")
		}
	}
	if c.File != nil {
		n++
		if c.File.Path == "" {
			e.add(path+".file.path", "required")
		}
	}
	if c.Env != nil {
		n++
		if (c.Env.Key == "") == (len(c.Env.Fields) == 0) {
			e.add(path+".env", "set exactly one of key or fields")
		}
	}
	if n != 1 {
		e.add(path, "set exactly one of vault, file or env")
	}
}

// checkRateLimit checks a quota. An upstream's (window) is a sliding
// window whose burst defaults to requests and may not exceed it; a
// caller's is a token bucket whose burst defaults to 1 and stays below
// requests (its refill is (requests-burst)/per).
func checkRateLimit(e *errs, path string, r *RateLimit, window bool) {
	if r.Requests <= 0 {
		e.add(path+".requests", "must be at least 1")
	}
	if r.Per.D() <= 0 {
		e.add(path+".per", "must be a positive duration")
	}
	switch {
	case r.Burst == 0 && window:
		r.Burst = r.Requests
	case r.Burst == 0:
		r.Burst = 1
	}
	switch {
	case r.Burst < 0:
		e.add(path+".burst", "must be positive")
	case window && r.Burst > r.Requests:
		e.add(path+".burst", "must be at most requests (how many calls may go at once)")
	case window:
	case r.Requests > 1 && r.Burst >= r.Requests:
		// The refill rate is (requests-burst)/per so that a full bucket plus
		// what refills in one window never exceeds requests.
		e.add(path+".burst", "must be less than requests, so that no window of per sees more than requests")
	case r.Requests == 1 && r.Burst != 1:
		e.add(path+".burst", "must be 1 when requests is 1")
	}
	if r.MaxWait == nil {
		d := Duration(DefaultMaxWait)
		r.MaxWait = &d
	} else if r.MaxWait.D() < 0 {
		e.add(path+".max_wait", "must not be negative")
	}
}

func (c *Config) completeCallers(e *errs) {
	if len(c.Callers) == 0 && !c.AllowAnonymous {
		e.add("callers", "no callers configured: add callers, or set allow_anonymous: true to let anyone in")
	}
	names := map[string]bool{}
	keys := map[string]string{}
	for i := range c.Callers {
		cl := &c.Callers[i]
		p := fmt.Sprintf("callers[%d]", i)
		checkName(e, p+".name", cl.Name, "caller", "", names)
		if cl.Name == callers.Internal {
			e.add(p+".name", "%s is keybroker's own name (its credential probes): choose another", quote(cl.Name))
		}

		if cl.KeySHA256 != "" {
			k, err := hex.DecodeString(strings.ToLower(cl.KeySHA256))
			if err != nil || len(k) != 32 {
				e.add(p+".key_sha256", "must be 64 hex digits (the SHA-256 of the key; `keybroker hash-key` makes one)")
			} else if callers.IsWeakKeyHash(k, cl.Name) {
				e.add(p+".key_sha256", "caller %s: this is the hash of a guessable key (empty, a common word or the caller's name); make a key with `keybroker hash-key`", quote(cl.Name))
			} else if other, dup := keys[string(k)]; dup {
				e.add(p+".key_sha256", "same key as caller %s", quote(other))
			} else {
				keys[string(k)] = cl.Name
			}
		}
		if cl.ClientCert != nil {
			m := cl.ClientCert
			if m.CommonName == "" && m.DNS == "" && m.URI == "" {
				e.add(p+".client_cert", "set common_name, dns or uri")
			}
			if c.TLS == nil || c.TLS.ClientCAFile == "" {
				e.add(p+".client_cert", "needs tls.client_ca_file")
			}
		}
		if cl.KeySHA256 == "" && cl.ClientCert == nil && cl.JWT == nil {
			e.add(p, "set key_sha256, client_cert or jwt")
		}
		for j := range cl.Allow {
			c.checkAllow(e, fmt.Sprintf("%s.allow[%d]", p, j), &cl.Allow[j])
		}
		if cl.RateLimit != nil {
			checkRateLimit(e, p+".rate_limit", cl.RateLimit, false)
			if cl.RateLimit.Shares != nil {
				e.add(p+".rate_limit.shares", "only an upstream's quota is shared: set shares under upstreams[].rate_limit")
			}
		}
	}
	c.checkJWTCallers(e)
	for i := range c.Upstreams {
		if rl := c.Upstreams[i].RateLimit; rl != nil && rl.Shares != nil {
			checkShares(e, fmt.Sprintf("upstreams[%d].rate_limit.shares", i), rl, names)
		}
	}
}

// upstreamNames are the configured upstreams' names.
func (c *Config) upstreamNames() []string {
	names := make([]string, len(c.Upstreams))
	for i, u := range c.Upstreams {
		names[i] = u.Name
	}
	return names
}

// knownMethods are the methods an allow rule may name: a misspelt one
// ("GTE") would otherwise allow nothing, silently.
var knownMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

func (c *Config) checkAllow(e *errs, path string, a *AllowRule) {
	if a.Upstream == "" {
		e.add(path+".upstream", "required")
	} else if c.Upstream(a.Upstream) == nil {
		e.add(path+".upstream", "no upstream named %s%s", quote(a.Upstream), didYouMean(a.Upstream, c.upstreamNames()))
	}
	for i, m := range a.Methods {
		a.Methods[i] = strings.ToUpper(m)
		if !knownMethods[a.Methods[i]] {
			e.add(fmt.Sprintf("%s.methods[%d]", path, i), "%s is not an HTTP method keybroker forwards (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)", quote(m))
		}
	}
	for i, pat := range a.Paths {
		if _, err := callers.ParsePattern(pat); err != nil {
			e.add(fmt.Sprintf("%s.paths[%d]", path, i), "%v", err)
		}
	}
	c.checkAllowOperations(e, path, a)
}

func (c *Config) completeRest(e *errs) {
	switch c.PolicyMode {
	case "":
		c.PolicyMode = "enforce"
	case "enforce", "report":
	default:
		e.add("policy_mode", "must be enforce or report")
	}
	rl := &c.RateLimit
	def(&rl.Backend, "local")
	switch rl.Backend {
	case "local":
	case "redis":
		def(&rl.Redis.Address, DefaultRedisAddress)
		if _, _, err := net.SplitHostPort(rl.Redis.Address); err != nil {
			e.add("ratelimit.redis.address", "must be host:port")
		}
		if rl.Redis.PasswordFile != "" {
			checkReadable(e, "ratelimit.redis.password_file", rl.Redis.PasswordFile)
		}
	default:
		e.add("ratelimit.backend", "must be local or redis")
	}
	if rl.Replicas == 0 {
		rl.Replicas = 1
	} else if rl.Replicas < 0 {
		e.add("ratelimit.replicas", "must be at least 1")
	}
	defDur(&rl.Margin, DefaultMargin)
	if rl.Margin.D() < 0 || rl.Margin.D() > time.Second {
		e.add("ratelimit.margin", "must be between 0s and 1s")
	}
	def(&c.Log.Level, "info")
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		e.add("log.level", "must be debug, info, warn or error")
	}
	s := &c.Server
	if s.MaxHeaderBytes == 0 {
		s.MaxHeaderBytes = DefaultMaxHeaderBytes
	} else if s.MaxHeaderBytes < 1024 || s.MaxHeaderBytes > MaxMaxHeaderBytes {
		e.add("server.max_header_bytes", "must be between 1024 and %d", MaxMaxHeaderBytes)
	}
	if s.MaxHeaderCount == 0 {
		s.MaxHeaderCount = DefaultMaxHeaderCount
	} else if s.MaxHeaderCount < 1 {
		e.add("server.max_header_count", "must be at least 1")
	}
	defDur(&s.ReadHeaderTimeout, DefaultReadHeader)
	defDur(&s.IdleTimeout, DefaultIdle)
	defDur(&s.ShutdownTimeout, DefaultShutdown)
	defDur(&s.ReadBodyTimeout, DefaultReadBody)
	if s.ReadBodyTimeout.D() < time.Second {
		e.add("server.read_body_timeout", "must be at least 1s")
	}
	if s.MaxConnections == 0 {
		s.MaxConnections = DefaultMaxConnections
	} else if s.MaxConnections < 16 {
		e.add("server.max_connections", "must be at least 16")
	}
	un := &s.Unidentified
	for _, q := range []struct {
		path string
		q    **Quota
		def  Quota
	}{
		{"server.unidentified.per_source", &un.PerSource, Quota{Requests: 60, Per: Duration(time.Minute)}},
		{"server.unidentified.total", &un.Total, Quota{Requests: 600, Per: Duration(time.Minute)}},
		{"server.refusals.per_caller", &s.Refusals.PerCaller, Quota{Requests: 60, Per: Duration(time.Minute)}},
	} {
		if *q.q == nil {
			d := q.def
			*q.q = &d
			continue
		}
		if (*q.q).Requests < 1 {
			e.add(q.path+".requests", "must be at least 1")
		}
		if (*q.q).Per.D() <= 0 {
			e.add(q.path+".per", "must be a positive duration")
		}
	}
	defDur(&un.SummaryInterval, time.Minute)
	if un.SummaryInterval.D() < time.Second {
		e.add("server.unidentified.summary_interval", "must be at least 1s")
	}
	defDur(&s.Refusals.SummaryInterval, time.Minute)
	if s.Refusals.SummaryInterval.D() < time.Second {
		e.add("server.refusals.summary_interval", "must be at least 1s")
	}
	if sg := c.Audit.Signing; sg != nil {
		cr := sg.Credential
		switch hasCred := cr.Vault != nil || cr.File != nil || cr.Env != nil; {
		case sg.VaultTransit != nil && hasCred:
			e.add("audit.signing", "set credential or vault_transit, not both")
		case sg.VaultTransit != nil:
			vt := sg.VaultTransit
			def(&vt.Mount, "transit")
			if vt.Key == "" {
				e.add("audit.signing.vault_transit.key", "required: the name of an Ed25519 transit key")
			}
		default:
			checkCredential(e, "audit.signing.credential", &sg.Credential)
		}
		defDur(&sg.CheckpointInterval, time.Minute)
		if sg.CheckpointInterval.D() < time.Second {
			e.add("audit.signing.checkpoint_interval", "must be at least 1s")
		}
		if sg.CheckpointRecords == 0 {
			sg.CheckpointRecords = 10000
		} else if sg.CheckpointRecords < 1 {
			e.add("audit.signing.checkpoint_records", "must be at least 1")
		}
	}
	switch c.Audit.Sync {
	case "":
		c.Audit.Sync = "writes"
	case "writes", "all", "none":
	default:
		e.add("audit.sync", "must be writes, all or none, not %s", quote(c.Audit.Sync))
	}
	if c.Audit.MinFreeBytes == 0 {
		c.Audit.MinFreeBytes = DefaultMinFreeBytes
	} else if c.Audit.MinFreeBytes < 0 {
		e.add("audit.min_free_bytes", "must not be negative")
	}
}

// checkName checks a name's form and that it is unique among seen.
func checkName(e *errs, path, name, kind, hint string, seen map[string]bool) {
	if !nameRE.MatchString(name) {
		e.add(path, "required: lower-case letters, digits, - and _%s", hint)
	} else if seen[name] {
		e.add(path, "duplicate %s %s", kind, quote(name))
	}
	seen[name] = true
}

func checkAddr(e *errs, path, addr string) {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		e.add(path, "must be host:port")
	}
}

func checkReadable(e *errs, path, file string) {
	if e.skipFiles {
		e.unchecked = append(e.unchecked, path+": "+file)
		return
	}
	f, err := os.Open(file)
	if err != nil {
		e.add(path, "cannot read %s", quote(file))
		return
	}
	f.Close()
}

func def(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

func defDur(dst *Duration, v time.Duration) {
	if *dst == 0 {
		*dst = Duration(v)
	}
}

func presetNames() []string {
	var names []string
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
