package callers

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
)

// A caller proves who it is in one of six ways, tried in one order, here
// and nowhere else: a verified client certificate naming it; a keybroker
// token (from keybroker's own OAuth token endpoint); a platform JWT; its
// key in Proxy-Authorization; its key in the upstream's own credential
// slot (drop-in); or nothing, where anonymous callers are allowed. Tokens
// are checked by verifiers this package declares (TokenVerifier,
// JWTVerifier), so it imports none of the packages that verify them.

// TokenVerifier verifies keybroker's own tokens (internal/oauth's Issuer).
type TokenVerifier interface {
	// IsToken reports whether v is shaped like one of its tokens.
	IsToken(v string) bool
	// VerifyToken checks tok's signature and expiry. Its error says why
	// a token does not hold; the reason is the token's own, public fact.
	VerifyToken(ctx context.Context, tok string) (TokenClaims, error)
	// Fingerprint is a token's binding to a caller key, from the key's
	// SHA-256.
	Fingerprint(keySHA256 []byte) string
}

// TokenClaims are what a verified keybroker token binds: a caller, an
// upstream and the fingerprint of the caller's key.
type TokenClaims struct {
	Caller, Upstream, Fingerprint string
}

// JWTVerifier verifies platform JWTs (internal/jwtauth's Verifier).
type JWTVerifier interface {
	// IsJWT reports whether v is shaped like a JWT.
	IsJWT(v string) bool
	// VerifyJWT checks tok against its issuer's keys. An *UnavailableError
	// says the issuer's keys cannot be had (the caller is not refused:
	// keybroker cannot tell); any other error why the token is refused.
	VerifyJWT(ctx context.Context, tok string) (VerifiedToken, error)
}

// Verifiers are the token verifiers of the running configuration; either
// may be nil (none configured: such tokens identify nobody).
type Verifiers struct {
	Tokens TokenVerifier
	JWT    JWTVerifier
}

// UnavailableError is the error of a token whose issuer's keys cannot be
// had: 503 identity_unavailable, not 401.
type UnavailableError struct{ Reason string }

func (e *UnavailableError) Error() string { return e.Reason }

// ErrTokenRevoked: a keybroker token whose caller's key changed or whose
// caller was removed.
var ErrTokenRevoked = errors.New("keybroker token revoked: its caller's key changed or the caller was removed; fetch a new one")

// ErrWrongUpstream: a keybroker token presented to another upstream than
// the one it was issued for.
var ErrWrongUpstream = errors.New("keybroker token was issued for another upstream")

// Presented is what a request carries in the places a caller proof can
// sit, read once: the request, the upstream's slot, and every key or
// token found there, which the audit never writes. Identify, the audit's
// redaction and the 401 hint all read it.
type Presented struct {
	req  *http.Request
	slot Slot
	// Keys are the values in the places a key or token can sit.
	Keys []string
}

// Present reads what req presents in Proxy-Authorization, Authorization
// and slot's headers and parameters; buf holds the keys (a stack array's
// slice spares an allocation).
func Present(req *http.Request, slot Slot, buf []string) Presented {
	return Presented{req: req, slot: slot, Keys: presentedKeys(buf, req, slot)}
}

// Slot is the slot the request was read against.
func (p Presented) Slot() Slot { return p.slot }

// Hint is the 401 message for p: whether it sent a key nobody has or none,
// then the ways of proving an identity that its slot accepts, and a
// client certificate where the listener verifies them.
func (p Presented) Hint(certs bool) string {
	if len(p.Keys) > 0 {
		return "unknown key: no caller has the key this request sent; " + strings.TrimPrefix(p.slot.Hint(certs), noIdentity)
	}
	return p.slot.Hint(certs)
}

const noIdentity = "no valid caller identity: "

// Identify finds who sent p's request to upstream, trying the proofs in
// their one order (see above). A proof that is presented but does not
// hold ends the search: a caller that meant to be someone is never taken
// for anonymous. Errors: ErrUnauthenticated (no or an unknown identity),
// ErrDropinName, *UnavailableError, or a token's own reason.
func (r *Registry) Identify(p Presented, upstream string, v Verifiers) (Identity, error) {
	req, slot := p.req, p.slot
	if req.TLS != nil && len(req.TLS.VerifiedChains) > 0 && len(req.TLS.VerifiedChains[0]) > 0 {
		if c := r.byCert(req.TLS.VerifiedChains[0][0]); c != nil {
			return Identity{Name: c.name, Auth: AuthCert, caller: c}, nil
		}
	}
	none := Identity{Auth: AuthNone}
	if v.Tokens != nil {
		if tok := bearerToken(req.Header, slot, v.Tokens.IsToken); tok != "" {
			id, err := r.byToken(req.Context(), tok, upstream, v.Tokens)
			if err != nil {
				return none, err
			}
			return id, nil
		}
	}
	if v.JWT != nil {
		if tok, basicUser := findJWT(req.Header, slot, v.JWT.IsJWT); tok != "" {
			id, err := r.byPlatformJWT(req.Context(), tok, basicUser, v.JWT)
			if err != nil {
				return none, err
			}
			return id, nil
		}
	}
	if vals := req.Header.Values("Proxy-Authorization"); len(vals) > 0 {
		if len(vals) == 1 {
			if key, ok := cutScheme(vals[0], "Bearer"); ok {
				if c := r.byKey(key); c != nil {
					return Identity{Name: c.name, Auth: AuthKey, caller: c}, nil
				}
			}
		}
		return none, ErrUnauthenticated
	}
	c, misnamed := r.dropin(req, slot)
	if c != nil {
		return Identity{Name: c.name, Auth: AuthDropin, caller: c}, nil
	}
	if misnamed {
		return none, ErrDropinName
	}
	if r.allowAnonymous {
		return Identity{Auth: AuthAnonymous}, nil
	}
	return none, ErrUnauthenticated
}

// byToken is the key caller a keybroker token names, if the token holds
// for upstream and was issued for the caller's current key.
func (r *Registry) byToken(ctx context.Context, tok, upstream string, v TokenVerifier) (Identity, error) {
	cl, err := v.VerifyToken(ctx, tok)
	if err != nil {
		return Identity{}, err
	}
	if cl.Upstream != upstream {
		return Identity{}, ErrWrongUpstream
	}
	id, key, ok := r.ByName(cl.Caller)
	if !ok || v.Fingerprint(key) != cl.Fingerprint {
		return Identity{}, ErrTokenRevoked
	}
	return id, nil
}

// byPlatformJWT is the caller a verified JWT names; one that came as a
// Basic password must come with that caller's name as the user.
func (r *Registry) byPlatformJWT(ctx context.Context, tok, basicUser string, v JWTVerifier) (Identity, error) {
	t, err := v.VerifyJWT(ctx, tok)
	if err != nil {
		return Identity{}, err
	}
	id, reason, ok := r.ByJWT(t)
	if !ok {
		return Identity{}, errors.New("token refused: " + reason)
	}
	if basicUser != "" && basicUser != id.Name {
		return Identity{}, errors.New("token refused: the Basic user name must be the token's caller's name")
	}
	return id, nil
}

// bearerToken returns the first value that is accepts, in
// Proxy-Authorization or one of the slot's headers (after "Bearer ", or
// bare), where a header holds exactly one value; "" when none is. Tokens
// are never read from a query (RFC 6750 §2.3: they would be logged along
// the way).
func bearerToken(h http.Header, slot Slot, is func(string) bool) string {
	if v := bearerIn(h, "Proxy-Authorization"); is(v) {
		return v
	}
	for _, name := range slot.Headers {
		if v := bearerIn(h, name); is(v) {
			return v
		}
	}
	return ""
}

// bearerIn is header name's one value, without a "Bearer " scheme.
func bearerIn(h http.Header, name string) string {
	vs := h.Values(name)
	if len(vs) != 1 {
		return ""
	}
	v := strings.TrimSpace(vs[0])
	if c, ok := cutScheme(v, "Bearer"); ok {
		v = c
	}
	return v
}

// findJWT returns the JWT a call carries, and the Basic user name it came
// with (if it came as a Basic slot's password).
func findJWT(h http.Header, slot Slot, isJWT func(string) bool) (tok, basicUser string) {
	if tok := bearerToken(h, slot, isJWT); tok != "" {
		return tok, ""
	}
	if slot.Basic {
		if vs := h.Values("Authorization"); len(vs) == 1 {
			if user, pass, ok := basicPair(vs[0]); ok && user != "" && isJWT(pass) {
				return pass, user
			}
		}
	}
	return "", ""
}

// basicRaw decodes an Authorization: Basic value ("user:password").
func basicRaw(v string) (string, bool) {
	c, ok := cutScheme(strings.TrimSpace(v), "Basic")
	if !ok {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(c)
	return string(raw), err == nil
}

// basicPair decodes an Authorization: Basic value into its user and
// password.
func basicPair(v string) (user, pass string, ok bool) {
	raw, ok := basicRaw(v)
	if !ok {
		return "", "", false
	}
	return strings.Cut(raw, ":")
}

// presentedKeys appends to out what req carries in the places a caller's
// key or token can sit: Proxy-Authorization, Authorization (and a Basic
// pair's parts), the slot's headers and query parameters. None of it is
// ever written to the audit, whether or not it named a caller.
func presentedKeys(out []string, req *http.Request, slot Slot) []string {
	add := func(v string) {
		if v = strings.TrimSpace(v); len(v) >= 6 {
			out = append(out, v)
		}
	}
	addAuth := func(v string) {
		add(v)
		_, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !ok {
			return
		}
		add(cred)
		if raw, ok := basicRaw(v); ok {
			add(raw)
			if _, pass, ok := strings.Cut(raw, ":"); ok {
				add(pass)
			}
		}
	}
	for _, h := range [...]string{"Proxy-Authorization", "Authorization"} {
		for _, v := range req.Header.Values(h) {
			addAuth(v)
		}
	}
	for _, h := range slot.Headers {
		if h != "Authorization" {
			for _, v := range req.Header.Values(h) {
				addAuth(v)
			}
		}
	}
	if req.URL.RawQuery != "" && len(slot.Params) > 0 {
		q := req.URL.Query()
		for _, p := range slot.Params {
			for _, v := range q[p] {
				add(v)
			}
		}
	}
	return out
}

// Hint is the 401 message: the ways of proving an identity that this
// slot accepts, and a client certificate where the listener verifies
// them; no others.
func (s Slot) Hint(certs bool) string {
	ways := []string{"Proxy-Authorization: Bearer <key>"}
	if s.Basic {
		ways = append(ways, "Authorization: Basic base64(<caller name>:<key>)")
	}
	for _, h := range s.Headers {
		ways = append(ways, h+": <key> (or Bearer <key>)")
	}
	for _, p := range s.Params {
		ways = append(ways, "?"+p+"=<key>")
	}
	if certs {
		ways = append(ways, "a client certificate")
	}
	return noIdentity + "send " + strings.Join(ways, ", or ")
}
