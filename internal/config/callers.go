package config

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/keybroker/keybroker/internal/callers"
)

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
