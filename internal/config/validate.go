package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
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
	defDur(&g.DialTimeout, DefaultEgressPhase)
	defDur(&g.ConnectTimeout, DefaultEgressPhase)
	defDur(&g.TLSHandshakeTimeout, DefaultEgressPhase)
	defDur(&g.IdleTimeout, DefaultEgressIdle)
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
