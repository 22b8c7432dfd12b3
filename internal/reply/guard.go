// Package reply guards what a vendor's reply hands a caller: a redirect or
// link on the vendor's own origin becomes the same path below
// /{upstream} on keybroker (as nginx's proxy_redirect default does), JSON
// link fields the upstream names are rewritten likewise, credential
// parameters are taken out of every link whatever its origin, and no reply
// header that carries an injected value reaches the caller. It keeps the
// promise "callers never hold a vendor secret, and their own key never goes
// to the vendor directly" on the way back. It does not know auth schemes:
// the proxy hands it the injected values.
package reply

import (
	"net/http"
	"net/url"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// Options describe one upstream's guard.
type Options struct {
	// Upstream is the upstream's name: links come back below /Upstream.
	Upstream string
	// Target is the vendor's base URL.
	Target *url.URL
	// CredentialParams are query parameters that carry a credential or a
	// caller's key (the injected one, the drop-in slots): they are taken
	// out of every link, compared without regard to case.
	CredentialParams []string
	// Links are the JSON reply fields holding links (rewrite_links: dotted
	// object keys, arrays on the way walked).
	Links []string
	// Log gets a line for each header and link dropped (names, never
	// values). Nil: no log.
	Log *zap.Logger
	// LinkDropped, when set, is called for each link field replaced by null.
	LinkDropped func()
}

// Guard guards one upstream's replies. It is safe for concurrent use.
type Guard struct {
	o        Options
	links    [][]string
	linkKeys [][]byte
	bodies   sync.Pool // *pooledBody
}

// NewGuard prepares a guard once per upstream (per configuration).
func NewGuard(o Options) *Guard {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	g := &Guard{o: o}
	for _, l := range o.Links {
		segs := strings.Split(l, ".")
		g.links = append(g.links, segs)
		g.linkKeys = append(g.linkKeys, []byte(`"`+segs[len(segs)-1]+`"`))
	}
	g.bodies.New = func() any { return &pooledBody{buf: make([]byte, 0, 4<<10)} }
	return g
}

// RewritesBodies reports whether the guard reads JSON bodies (the upstream
// names link fields): the proxy then asks the vendor for encodings it can
// read.
func (g *Guard) RewritesBodies() bool { return len(g.links) > 0 }

// Call is what the guard needs to know of the call a reply answers,
// computed once per reply by the proxy.
type Call struct {
	// RequestID names the call in log lines.
	RequestID string
	// Origin is how the caller reached keybroker.
	Origin Origin
	// Leaks are the injected values (as injected, escaped and encoded) that
	// no reply may carry.
	Leaks []string
	// Head: the call was a HEAD (no body to rewrite).
	Head bool
}

// Origin is the scheme and host a caller used to reach keybroker.
type Origin struct {
	Scheme, Host string
}

// OriginOf is the origin the caller of r used.
func OriginOf(r *http.Request) Origin {
	o := Origin{Scheme: "http", Host: r.Host}
	if r.TLS != nil {
		o.Scheme = "https"
	}
	return o
}

// Guard makes resp safe to hand the caller: its headers, then its body's
// links. resp.Request is the request sent to the vendor. An error (a
// reply keybroker cannot read, *EncodingError) means the reply must not
// be passed on.
func (g *Guard) Guard(resp *http.Response, c Call) error {
	g.headers(resp, c)
	return g.body(resp, c)
}

// linkHeaders are reply headers that hold a URL the caller may follow.
var linkHeaders = []string{"Location", "Content-Location"}

// headers rewrites Location and Content-Location, then drops any reply
// header whose value still holds an injected credential, logging its name
// (never its value). Reply trailers are not passed on: they would come
// after these checks.
func (g *Guard) headers(resp *http.Response, c Call) {
	h := resp.Header
	resp.Trailer = nil
	for _, name := range linkHeaders {
		vs := h[name]
		if len(vs) == 0 {
			continue
		}
		kept := vs[:0]
		for _, v := range vs {
			if nv, ok := g.link(v, resp.Request.URL, c); ok {
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
			if containsAny(v, c.Leaks) {
				delete(h, name)
				g.o.Log.Warn("dropped a vendor reply header that carried the injected credential",
					zap.String("request_id", c.RequestID), zap.String("upstream", g.o.Upstream), zap.String("header", name))
				break
			}
		}
	}
}

func containsAny(s string, subs []string) bool {
	for _, x := range subs {
		if x != "" && strings.Contains(s, x) {
			return true
		}
	}
	return false
}
