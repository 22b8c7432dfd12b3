package config

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

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

func presetNames() []string {
	var names []string
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
