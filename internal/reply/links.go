package reply

import (
	"net/url"
	"strings"

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
	// url.Parse has lowered both schemes; host names compare in any case.
	if l.Scheme != t.Scheme || l.User != nil || !strings.EqualFold(egress.Addr(l), egress.Addr(t)) {
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
