package proxy

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/jwtauth"
)

// A caller may prove who it is with a token its platform issued (a
// Kubernetes service-account token, a Vault identity token): verified by
// internal/jwtauth, matched to a caller by callers.Registry.ByJWT.

// identityUnavailable is the error of a JWT whose issuer's keys cannot be had:
// 503 identity_unavailable, not 401.
type identityUnavailable struct{ reason string }

func (e identityUnavailable) Error() string { return e.reason }

// jwtIdentity identifies a call that carries a JWT: in
// Proxy-Authorization (Bearer), or in the upstream's header slots (Bearer
// or bare), or as the password of a Basic slot whose user name must then
// be the token's caller. Never in a query (RFC 6750 §2.3: it would be
// logged along the way). ok is false when the call carries none.
func (p *Proxy) jwtIdentity(r *http.Request, st *state, slot callers.Slot) (callers.Identity, bool, error) {
	tok, basicUser := findJWT(r, slot)
	if tok == "" {
		return callers.Identity{}, false, nil
	}
	none := callers.Identity{Auth: callers.AuthNone}
	claims, err := st.jwt.Verify(r.Context(), tok)
	if err != nil {
		var je *jwtauth.Error
		if errors.As(err, &je) && je.Unavailable {
			return none, true, identityUnavailable{je.Reason}
		}
		return none, true, err
	}
	id, reason, ok := st.callers.ByJWT(callers.VerifiedToken{Issuer: claims.Issuer, Subject: claims.Subject,
		Audience: claims.Audience, Claims: claims.Raw})
	if !ok {
		return none, true, errors.New("token refused: " + reason)
	}
	if basicUser != "" && basicUser != id.Name {
		return none, true, errors.New("token refused: the Basic user name must be the token's caller's name")
	}
	return id, true, nil
}

// bearerToken returns the first token that is accepts, in
// Proxy-Authorization or one of the slot's headers (after "Bearer ", or
// bare), where a header holds exactly one value; "" when none is.
func bearerToken(r *http.Request, slot callers.Slot, is func(string) bool) string {
	if v := bearerIn(r.Header, "Proxy-Authorization"); is(v) {
		return v
	}
	for _, h := range slot.Headers {
		if v := bearerIn(r.Header, h); is(v) {
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
	if s, c, ok := strings.Cut(v, " "); ok && strings.EqualFold(s, "Bearer") {
		v = strings.TrimSpace(c)
	}
	return v
}

// findJWT returns the JWT a call carries, and the Basic user name it came
// with (if it came as a Basic password).
func findJWT(r *http.Request, slot callers.Slot) (tok, basicUser string) {
	if tok := bearerToken(r, slot, jwtauth.LooksLikeJWT); tok != "" {
		return tok, ""
	}
	if slot.Basic {
		if vs := r.Header.Values("Authorization"); len(vs) == 1 {
			if s, c, ok := strings.Cut(strings.TrimSpace(vs[0]), " "); ok && strings.EqualFold(s, "Basic") {
				if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c)); err == nil {
					if user, pass, ok := strings.Cut(string(raw), ":"); ok && user != "" && jwtauth.LooksLikeJWT(pass) {
						return pass, user
					}
				}
			}
		}
	}
	return "", ""
}
