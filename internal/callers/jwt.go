package callers

import (
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// VerifiedToken is what a verified JWT says of its holder.
type VerifiedToken struct {
	Issuer   string
	Subject  string
	Audience []string
	// Claims is the token's whole payload, for claims matched by pointer.
	Claims map[string]any
}

// ByJWT finds the caller a verified token names: the first whose issuer,
// audience, subject (when it has one) and claims all match. Without one, reason says what
// did not (the token's own facts, never another caller's rules).
func (r *Registry) ByJWT(t VerifiedToken) (id Identity, reason string, ok bool) {
	reason = "no caller is identified by this issuer and subject"
	for _, c := range r.callers {
		m := c.jwt
		if m == nil || m.Issuer != t.Issuer || (m.Subject != "" && m.Subject != t.Subject) {
			continue
		}
		if !slices.Contains(t.Audience, m.Audience) {
			reason = "wrong audience for this subject"
			continue
		}
		if p, ok := claimsMatch(m.Claims, t.Claims); !ok {
			reason = "claim " + strconv.Quote(p) + " does not match"
			continue
		}
		return Identity{Name: c.name, Auth: AuthJWT, Subject: t.Subject, caller: c}, "", true
	}
	return Identity{Auth: AuthNone}, reason, false
}

// claimsMatch reports whether every wanted claim (by JSON Pointer) is in
// the payload with the same JSON value; the first that is not is named.
func claimsMatch(want, payload map[string]any) (string, bool) {
	for ptr, v := range want {
		got, ok := Pointer(payload, ptr)
		if !ok || !sameJSON(got, v) {
			return ptr, false
		}
	}
	return "", true
}

// Pointer resolves an RFC 6901 JSON Pointer ("/kubernetes.io/namespace")
// in a decoded JSON document.
func Pointer(doc any, ptr string) (any, bool) {
	if ptr == "" {
		return doc, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false
	}
	cur := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch n := cur.(type) {
		case map[string]any:
			v, ok := n[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n) || (len(tok) > 1 && tok[0] == '0') {
				return nil, false
			}
			cur = n[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// sameJSON compares a claim with a configured value as JSON values (a
// YAML 5 equals a JSON 5.0).
func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var x, y any
	_ = json.Unmarshal(ja, &x)
	_ = json.Unmarshal(jb, &y)
	return reflect.DeepEqual(x, y)
}
