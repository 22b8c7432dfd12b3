package reply

import (
	"net"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/rawquery"
)

// link maps one link from a vendor reply. ref is resolved against the
// vendor request's URL. A link on the upstream's origin and below its base
// path becomes the same path below /{upstream} on the caller's origin; any
// other link keeps its target. Either way the query loses the credential
// parameters and any parameter whose value holds an injected value. ok is
// false when the link still holds a credential after that (in its path,
// say) and must be dropped.
func (g *Guard) link(ref string, vendorURL *url.URL, c Call) (string, bool) {
	l, err := vendorURL.Parse(ref)
	if err != nil {
		return "", !containsAny(ref, c.Leaks)
	}
	l.RawQuery = rawquery.Filter(l.RawQuery, func(name, value, pair string) bool {
		return rawquery.HasName(g.o.CredentialParams, name) || containsAny(value, c.Leaks) || containsAny(pair, c.Leaks)
	})
	if rest, ok := g.belowBase(l); ok {
		to := c.Origin
		m := url.URL{Scheme: to.Scheme, Host: to.Host, RawQuery: l.RawQuery, ForceQuery: l.ForceQuery, Fragment: l.Fragment}
		m.Path = "/" + g.o.Upstream + rest
		if to.Host == "" {
			m.Scheme = "" // no Host from the caller: a path-absolute reference
		}
		out := m.String()
		return out, !containsAny(out, c.Leaks)
	}
	out := l.String()
	return out, !containsAny(out, c.Leaks)
}

// belowBase reports whether l is on the upstream's origin (scheme, host and
// port, default ports folded, no userinfo) and at or below its base path,
// and returns the path below the base.
func (g *Guard) belowBase(l *url.URL) (string, bool) {
	t := g.o.Target
	if l.User != nil || !sameOrigin(l, t) {
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

// jsonLink judges a JSON link field's decoded value. A URL on the
// upstream's origin and at or below its base path (scheme and host in any
// case, a trailing dot on the host, the default port written or not,
// userinfo dropped; relative links resolved against the vendor request)
// becomes the same path below /{upstream} on the caller's origin, without
// credential parameters. Anything else (another host or port, a path
// outside the base, a value that does not parse) is dropped (null): a link
// field never hands a drop-in client a URL that is not keybroker's.
func (g *Guard) jsonLink(field, value string, vendorURL *url.URL, c Call) (string, bool) {
	l, err := vendorURL.Parse(value)
	if err == nil {
		l.User = nil
		if sameOrigin(l, g.o.Target) {
			if out, ok := g.link(l.String(), vendorURL, c); ok && g.ownLink(out, c) {
				return out, true
			}
		}
	}
	g.o.Log.Warn("dropped a link field that pointed away from the upstream",
		zap.String("request_id", c.RequestID), zap.String("upstream", g.o.Upstream), zap.String("field", field))
	if g.o.LinkDropped != nil {
		g.o.LinkDropped()
	}
	return "", false
}

// ownLink reports whether out (from link) points below /{upstream}.
func (g *Guard) ownLink(out string, c Call) bool {
	u, err := url.Parse(out)
	return err == nil && (u.Host == c.Origin.Host || u.Host == "") && u.User == nil &&
		(u.Path == "/"+g.o.Upstream || strings.HasPrefix(u.Path, "/"+g.o.Upstream+"/"))
}

// sameOrigin compares scheme, host (any case, a trailing dot ignored) and
// port (the default one written or not).
func sameOrigin(a, b *url.URL) bool {
	host := func(u *url.URL) string { return strings.TrimSuffix(strings.ToLower(u.Hostname()), ".") }
	port := func(u *url.URL) string {
		_, p, _ := net.SplitHostPort(egress.Addr(u))
		return p
	}
	return a.Scheme == b.Scheme && host(a) == host(b) && port(a) == port(b)
}
