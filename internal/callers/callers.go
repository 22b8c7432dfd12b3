// Package callers owns who a caller is and what it may do: every proof of
// identity and the one order they are tried in (proofs.go: a verified
// client certificate, a keybroker token, a platform JWT, a
// Proxy-Authorization key, the caller's key in the vendor's own
// credential slot, anonymous), and the allow policy per caller, with its
// path-pattern grammar. It does not read the network or the configuration
// file, and verifies no token itself: it declares its own types (Caller,
// CertMatch, Rule, Slot) and the verifiers it needs, which the assembly
// fills in.
package callers

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Ways a caller was identified, as written in the audit record.
const (
	AuthCert      = "cert"
	AuthKey       = "key"
	AuthDropin    = "dropin"
	AuthAnonymous = "anonymous"
	AuthNone      = "none"
	// AuthInternal marks keybroker's own calls (credential probes), made
	// as caller Internal.
	AuthInternal = "internal"
	// AuthToken: a token from keybroker's own OAuth token endpoint, which
	// the caller got with its key.
	AuthToken = "token"
	// AuthJWT: a token its platform issued (Kubernetes, Vault, an OIDC
	// issuer), verified with the issuer's keys.
	AuthJWT = "jwt"
)

// KeyPrefix starts every key made by NewKey, so that a leaked key is easy
// to recognise in a scanner or a paste.
const KeyPrefix = "kbk_"

// Internal is the caller name of keybroker's own calls; no configured
// caller may have it.
const Internal = "keybroker"

// ErrUnauthenticated means no known identity. The reply never says which
// part was wrong or which callers exist.
var ErrUnauthenticated = errors.New("caller unauthenticated")

// ErrDropinName is the one ErrUnauthenticated that says what was wrong: a
// drop-in Basic credential whose key is valid but whose user name is not
// that key's caller. Only the key's holder can get it, so it confirms no
// name to anyone else; it spares the holder a hunt for the wrong part.
var ErrDropinName = fmt.Errorf("%s: %w", DropinNameMessage, ErrUnauthenticated)

// DropinNameMessage is ErrDropinName's text for the caller's 401.
const DropinNameMessage = "valid key; the user name must be its caller's name"

// Identity is who made a call.
type Identity struct {
	// Name is the caller's name; empty for anonymous.
	Name string
	// Auth is how it was identified: cert, key, dropin, token, jwt or
	// anonymous.
	Auth string
	// Subject is a JWT caller's token subject (for the audit).
	Subject string
	// caller is the matched caller, nil for anonymous.
	caller *caller
}

// Caller is one known internal service, as the registry is given it.
type Caller struct {
	Name string
	// KeySHA256 is the SHA-256 of the caller's key; nil: no key.
	KeySHA256 []byte
	// Cert identifies the caller by its verified client certificate.
	Cert *CertMatch
	// JWT identifies the caller by a token its platform issued.
	JWT *JWTMatch
	// Allow is the caller's policy; nil allows everything.
	Allow []Rule
}

// CertMatch identifies a caller by its verified client certificate; any one
// field that matches is enough.
type CertMatch struct {
	CommonName string
	DNS        string
	URI        string
}

// JWTMatch identifies a caller by a verified JWT: its issuer, an
// audience it names, its subject ("": any), and claims (by JSON Pointer,
// RFC 6901) that must equal the values given.
type JWTMatch struct {
	Issuer, Audience, Subject string
	Claims                    map[string]any
}

// Rule lets a caller use an upstream with some methods on some paths
// (patterns, see ParsePattern). Empty Methods or Paths mean all.
type Rule struct {
	Upstream string
	Methods  []string
	Paths    []string
	// Operations and Tiers name the upstream's documented operations and
	// their tiers; a rule with either matches a documented call only
	// (Action.Operation set). Every field given must hold.
	Operations []string
	Tiers      []string
}

// caller is a Caller compiled for matching.
type caller struct {
	name   string
	key    [sha256.Size]byte
	hasKey bool
	cert   *CertMatch
	jwt    *JWTMatch
	rules  []rule // nil: everything allowed
}

// Slot says where an upstream's vendor credential goes, which is where a
// drop-in caller puts its own key. The proxy's auth scheme says what it is.
type Slot struct {
	// Basic: Authorization: Basic base64(<caller name>:<key>).
	Basic bool
	// Headers hold the key as their value, raw or after "Bearer ".
	Headers []string
	// Params are query parameters that hold the key.
	Params []string
}

// Registry identifies callers. It is immutable once built.
type Registry struct {
	callers        []*caller
	allowAnonymous bool
}

// NewRegistry builds a registry. It fails on a malformed key hash or path
// pattern, naming the caller and the pattern.
func NewRegistry(cs []Caller, allowAnonymous bool) (*Registry, error) {
	r := &Registry{allowAnonymous: allowAnonymous}
	for _, c := range cs {
		cl := &caller{name: c.Name, cert: c.Cert, jwt: c.JWT}
		switch len(c.KeySHA256) {
		case 0:
		case sha256.Size:
			copy(cl.key[:], c.KeySHA256)
			cl.hasKey = true
		default:
			return nil, fmt.Errorf("caller %s: key hash is not a SHA-256", c.Name)
		}
		if c.Allow != nil {
			rules, err := compileRules(c.Allow)
			if err != nil {
				return nil, fmt.Errorf("caller %s: %w", c.Name, err)
			}
			cl.rules = rules
		}
		r.callers = append(r.callers, cl)
	}
	return r, nil
}

// dropin finds the caller whose key sits in one of the upstream's drop-in
// slots. misnamed reports a Basic credential with a valid key under
// another user name (when no slot identified anyone).
func (r *Registry) dropin(req *http.Request, slot Slot) (c *caller, misnamed bool) {
	auths := req.Header.Values("Authorization")
	if len(auths) > 1 {
		return nil, false // ambiguous: never guess which one is meant
	}
	auth := ""
	if len(auths) == 1 {
		auth = auths[0]
	}
	if slot.Basic {
		// The contract is <caller name>:<key>: a name is required, so
		// ":<key>" identifies nobody.
		if name, key, ok := basicPair(auth); ok && name != "" {
			c := r.byKey(key)
			if c != nil && subtle.ConstantTimeCompare([]byte(name), []byte(c.name)) == 1 {
				return c, false
			}
			misnamed = c != nil
		}
	}
	for _, h := range slot.Headers {
		if vs := req.Header.Values(h); len(vs) == 1 {
			v := vs[0]
			if k, ok := cutScheme(v, "Bearer"); ok {
				v = k
			}
			if c := r.byKey(v); c != nil {
				return c, false
			}
		}
	}
	if len(slot.Params) > 0 && req.URL.RawQuery != "" {
		q := req.URL.Query()
		for _, p := range slot.Params {
			if vs := q[p]; len(vs) == 1 {
				if c := r.byKey(vs[0]); c != nil {
					return c, false
				}
			}
		}
	}
	return nil, misnamed
}

// ByNameKey identifies a caller by its name and key, as an OAuth client
// authenticates (client_id, client_secret). It returns the caller's key
// hash too, which the token binds.
func (r *Registry) ByNameKey(name, key string) (Identity, []byte, bool) {
	c := r.byKey(key)
	if c == nil || subtle.ConstantTimeCompare([]byte(name), []byte(c.name)) != 1 {
		return Identity{Auth: AuthNone}, nil, false
	}
	return Identity{Name: c.name, Auth: AuthToken, caller: c}, c.key[:], true
}

// ByName returns the key caller named name and its key hash (a token's
// binding is checked against it), or false when there is none: the caller
// was removed, or has no key.
func (r *Registry) ByName(name string) (Identity, []byte, bool) {
	for _, c := range r.callers {
		if c.name == name && c.hasKey {
			return Identity{Name: c.name, Auth: AuthToken, caller: c}, c.key[:], true
		}
	}
	return Identity{Auth: AuthNone}, nil, false
}

// Named returns the caller named name, whatever proves it, for questions
// asked of its policy without a request (keybroker policy); never to
// identify a call.
func (r *Registry) Named(name string) (Identity, bool) {
	for _, c := range r.callers {
		if c.name == name {
			return Identity{Name: c.name, caller: c}, true
		}
	}
	return Identity{}, false
}

// byKey returns the caller whose key hashes to key's SHA-256. Every caller
// is compared, in constant time, so the time taken says nothing about which
// callers exist.
func (r *Registry) byKey(key string) *caller {
	if key == "" {
		return nil
	}
	// Keys keybroker makes are 46 bytes: hashed from the stack, not a
	// copy on the heap per call.
	var buf [64]byte
	sum := sha256.Sum256(append(buf[:0], key...))
	var found *caller
	for _, c := range r.callers {
		if c.hasKey && subtle.ConstantTimeCompare(sum[:], c.key[:]) == 1 && found == nil {
			found = c
		}
	}
	return found
}

func (r *Registry) byCert(cert *x509.Certificate) *caller {
	for _, c := range r.callers {
		m := c.cert
		if m == nil {
			continue
		}
		if m.CommonName != "" && cert.Subject.CommonName == m.CommonName {
			return c
		}
		if m.DNS != "" {
			for _, d := range cert.DNSNames {
				if strings.EqualFold(d, m.DNS) {
					return c
				}
			}
		}
		if m.URI != "" {
			for _, u := range cert.URIs {
				if u.String() == m.URI {
					return c
				}
			}
		}
	}
	return nil
}

// cutScheme returns the credential after an auth scheme (case-insensitive,
// as RFC 9110 says) and one space.
func cutScheme(v, scheme string) (string, bool) {
	if len(v) <= len(scheme)+1 || !strings.EqualFold(v[:len(scheme)], scheme) || v[len(scheme)] != ' ' {
		return "", false
	}
	return strings.TrimSpace(v[len(scheme)+1:]), true
}

// NewKey returns a new random caller key (256 bits, prefixed) and the hex
// SHA-256 that goes into the configuration as key_sha256.
func NewKey() (key, sum string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return key, HashKey(key), nil
}

// HashKey returns the hex SHA-256 of key.
func HashKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}
