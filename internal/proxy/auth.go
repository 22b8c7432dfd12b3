package proxy

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/rawquery"
	"github.com/keybroker/keybroker/internal/secrets"
)

// Scheme is how one upstream's vendor credential travels: the fields of
// the stored secret it needs, how it puts them into a request, and where a
// drop-in caller's own key sits in its place (which is also what is
// stripped from every caller request). Adding an auth type (bearer, HMAC,
// SigV4) is one more Scheme; nothing else switches on the type.
type Scheme interface {
	// Fields lists the secret's fields the scheme needs.
	Fields() []string
	// Inject puts the credential into out, replacing whatever is in its
	// slot; calling it twice (a retry) leaves one credential.
	Inject(out *http.Request, c secrets.Credential)
	// Slot says where a caller's own key would sit.
	Slot() callers.Slot
	// Injected returns the values Inject puts on the wire, which no reply
	// to a caller may carry.
	Injected(c secrets.Credential) []string
}

// BasicAuth is HTTP Basic with the secret's userField and passField.
func BasicAuth(userField, passField string) Scheme {
	return basicScheme{userField, passField, new(atomic.Pointer[basicHeader])}
}

// HeaderAuth sets header to prefix and the secret's field.
func HeaderAuth(header, prefix, field string) Scheme {
	return headerScheme{http.CanonicalHeaderKey(header), prefix, field}
}

// QueryAuth sets the query parameter param to the secret's field.
func QueryAuth(param, field string) Scheme { return queryScheme{param, field} }

// WithDropin adds slots a vendor's own clients use for their key (the
// infocyte preset: ?access_token= and X-Access-Token) to s's slot.
func WithDropin(s Scheme, headers, params []string) Scheme {
	if len(headers) == 0 && len(params) == 0 {
		return s
	}
	return dropinScheme{s, headers, params}
}

type basicScheme struct {
	user, pass string
	// last caches the header of the last credential injected, so that the
	// pair is not base64-encoded on every call.
	last *atomic.Pointer[basicHeader]
}

type basicHeader struct {
	user, pass string
	value      []string // shared by requests: never modified
}

func (b basicScheme) Fields() []string { return []string{b.user, b.pass} }

func (b basicScheme) values(c secrets.Credential) (string, string) {
	u, _ := c.Field(b.user)
	p, _ := c.Field(b.pass)
	return u.Reveal(), p.Reveal()
}

func (b basicScheme) Inject(out *http.Request, c secrets.Credential) {
	user, pass := b.values(c)
	h := b.last.Load()
	if h == nil || h.user != user || h.pass != pass {
		h = &basicHeader{user, pass, []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
		b.last.Store(h)
	}
	out.Header["Authorization"] = h.value
}

func (basicScheme) Slot() callers.Slot { return callers.Slot{Basic: true} }

func (b basicScheme) Injected(c secrets.Credential) []string {
	u, p := b.values(c)
	return []string{u, p, u + ":" + p, base64.StdEncoding.EncodeToString([]byte(u + ":" + p))}
}

type headerScheme struct{ header, prefix, field string }

func (h headerScheme) Fields() []string { return []string{h.field} }

func (h headerScheme) value(c secrets.Credential) string {
	v, _ := c.Field(h.field)
	return v.Reveal()
}

func (h headerScheme) Inject(out *http.Request, c secrets.Credential) {
	out.Header.Set(h.header, h.prefix+h.value(c))
}

func (h headerScheme) Slot() callers.Slot { return callers.Slot{Headers: []string{h.header}} }

func (h headerScheme) Injected(c secrets.Credential) []string { return []string{h.value(c)} }

type queryScheme struct{ param, field string }

func (q queryScheme) Fields() []string { return []string{q.field} }

func (q queryScheme) value(c secrets.Credential) string {
	v, _ := c.Field(q.field)
	return v.Reveal()
}

func (q queryScheme) Inject(out *http.Request, c secrets.Credential) {
	raw := rawquery.Drop(out.URL.RawQuery, q.param)
	if raw != "" {
		raw += "&"
	}
	out.URL.RawQuery = raw + url.QueryEscape(q.param) + "=" + url.QueryEscape(q.value(c))
}

func (q queryScheme) Slot() callers.Slot { return callers.Slot{Params: []string{q.param}} }

func (q queryScheme) Injected(c secrets.Credential) []string { return []string{q.value(c)} }

type dropinScheme struct {
	Scheme
	headers, params []string
}

func (d dropinScheme) Slot() callers.Slot {
	s := d.Scheme.Slot()
	s.Headers = append(append([]string{}, s.Headers...), d.headers...)
	s.Params = append(append([]string{}, s.Params...), d.params...)
	return s
}

// leakValues returns the strings that must never reach a caller for this
// credential: each value the upstream's auth scheme injects, as injected,
// query- and path-escaped and base64-encoded. They are computed once per
// credential version.
func (u *upstream) leakValues(cred secrets.Credential) []string {
	token := cred.Token // an OAuth upstream's vendor token changes within a version
	if lc := u.leaks.Load(); lc != nil && lc.ref == cred.Ref && lc.version == cred.Version && lc.source == cred.Source && lc.token == token {
		return lc.values
	}
	var vals []string
	add := func(v string) {
		if len(v) < 6 { // too short to search for without false alarms
			return
		}
		vals = append(vals, v, url.QueryEscape(v), url.PathEscape(v), base64.StdEncoding.EncodeToString([]byte(v)))
	}
	for _, v := range u.spec.Auth.Injected(cred) {
		add(v)
	}
	vals = dedupe(vals)
	u.leaks.Store(&leakSet{source: cred.Source, ref: cred.Ref, version: cred.Version, token: token, values: vals})
	return vals
}

type leakSet struct {
	source, ref string
	version     int
	token       secrets.Secret
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
