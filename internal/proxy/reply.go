package proxy

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/secrets"
)

// The reply side of the promise "callers never hold a vendor secret, and
// their own key never goes to the vendor directly": a vendor's redirect or
// link on its own origin is turned into the same path below /{upstream} on
// keybroker (as nginx's proxy_redirect default does), credential
// parameters are taken out of every link whatever its origin, and no reply
// header that carries an injected value reaches the caller.

// linkHeaders are reply headers that hold a URL the caller may follow.
var linkHeaders = []string{"Location", "Content-Location"}

// callerOrigin is the scheme and host the caller used to reach keybroker.
type callerOrigin struct {
	scheme, host string
}

func originOf(r *http.Request) callerOrigin {
	o := callerOrigin{scheme: "http", host: r.Host}
	if r.TLS != nil {
		o.scheme = "https"
	}
	return o
}

// rewriteLink maps one link from a vendor reply. ref is resolved against
// the vendor request's URL. A link on the upstream's origin and below its
// base path becomes the same path below /{upstream} on the caller's origin;
// any other link keeps its target. Either way the query loses the injected
// parameter, the drop-in slot parameters and any parameter whose value
// holds an injected credential. ok is false when the link still holds a
// credential after that (in its path, say) and must be dropped.
func (u *upstream) rewriteLink(ref string, vendorURL *url.URL, to callerOrigin, leaks []string) (string, bool) {
	l, err := vendorURL.Parse(ref)
	if err != nil {
		return "", !containsAny(ref, leaks)
	}
	l.RawQuery = u.dropCredentialParams(l.RawQuery, leaks)
	if rest, ok := u.belowBase(l); ok {
		m := url.URL{Scheme: to.scheme, Host: to.host, RawQuery: l.RawQuery, ForceQuery: l.ForceQuery, Fragment: l.Fragment}
		m.Path = "/" + u.cfg.Name + rest
		if to.host == "" {
			m.Scheme = "" // no Host from the caller: a path-absolute reference
		}
		out := m.String()
		return out, !containsAny(out, leaks)
	}
	out := l.String()
	return out, !containsAny(out, leaks)
}

// belowBase reports whether l is on the upstream's origin (scheme, host and
// port, default ports folded) and at or below its base path, and returns
// the path below the base.
func (u *upstream) belowBase(l *url.URL) (string, bool) {
	t := u.cfg.Target
	if !strings.EqualFold(l.Scheme, t.Scheme) || !strings.EqualFold(l.Hostname(), t.Hostname()) ||
		portOf(l) != portOf(t) || l.User != nil {
		return "", false
	}
	base := t.Path
	switch {
	case l.Path == base:
		return "", true
	case base == "" || strings.HasPrefix(l.Path, base+"/"):
		return l.Path[len(base):], true
	}
	return "", false
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// dropCredentialParams removes from a raw query the injected parameter,
// the drop-in slot parameters (names compared decoded, any case) and every
// parameter whose decoded value holds a leak value. The rest is kept byte
// for byte.
func (u *upstream) dropCredentialParams(raw string, leaks []string) string {
	return filterQuery(raw, func(name, value, pair string) bool {
		return u.credentialParam(name) || containsAny(value, leaks) || containsAny(pair, leaks)
	})
}

func (u *upstream) credentialParam(name string) bool {
	for _, p := range u.stripQuery {
		if strings.EqualFold(p, name) {
			return true
		}
	}
	return false
}

// leakValues returns the strings that must never reach a caller for this
// credential: each value the upstream's auth scheme injects, as injected,
// query- and path-escaped and base64-encoded. They are computed once per
// credential version.
func (u *upstream) leakValues(cred secrets.Credential) []string {
	if lc := u.leaks.Load(); lc != nil && lc.ref == cred.Ref && lc.version == cred.Version && lc.source == cred.Source {
		return lc.values
	}
	var vals []string
	add := func(v string) {
		if len(v) < 6 { // too short to search for without false alarms
			return
		}
		vals = append(vals, v, url.QueryEscape(v), url.PathEscape(v), base64.StdEncoding.EncodeToString([]byte(v)))
	}
	for _, v := range u.cfg.Auth.Injected(cred) {
		add(v)
	}
	vals = dedupe(vals)
	u.leaks.Store(&leakSet{source: cred.Source, ref: cred.Ref, version: cred.Version, values: vals})
	return vals
}

type leakSet struct {
	source, ref string
	version     int
	values      []string
}

func dedupe(vs []string) []string {
	seen := make(map[string]bool, len(vs))
	out := vs[:0]
	for _, v := range vs {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func containsAny(s string, subs []string) bool {
	for _, x := range subs {
		if x != "" && strings.Contains(s, x) {
			return true
		}
	}
	return false
}

// guardReplyHeaders rewrites Location and Content-Location, then drops any
// reply header whose value still holds an injected credential, logging its
// name (never its value).
func (u *upstream) guardReplyHeaders(resp *http.Response, c *call) {
	h := resp.Header
	// Reply trailers are not passed on: they would come after these checks.
	resp.Trailer = nil
	leaks := u.leakValues(c.cred)
	to := originOf(c.in)
	for _, name := range linkHeaders {
		vs := h[name]
		if len(vs) == 0 {
			continue
		}
		kept := vs[:0]
		for _, v := range vs {
			if nv, ok := u.rewriteLink(v, resp.Request.URL, to, leaks); ok {
				kept = append(kept, nv)
			}
		}
		if len(kept) == 0 {
			delete(h, name)
		} else {
			h[name] = kept
		}
	}
	for name, vs := range h {
		for _, v := range vs {
			if containsAny(v, leaks) {
				delete(h, name)
				u.p.opts.Log.Warn("dropped a vendor reply header that carried the injected credential",
					zap.String("request_id", c.id), zap.String("upstream", u.cfg.Name), zap.String("header", name))
				break
			}
		}
	}
}
