// Package tokenshape recognises bearer credentials by their shape alone: a
// JWT (three or five base64url segments, the first decoding to a JSON
// object), a keybroker token (kbt.…) and a keybroker caller key (kbk_…).
// The request hygiene refuses a token in a query with it, and the audit
// redacts any of them wherever they sit. It verifies nothing and imports
// nothing of keybroker's.
package tokenshape

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
)

// Prefixes of keybroker's own credentials.
const (
	TokenPrefix = "kbt."
	KeyPrefix   = "kbk_"
)

// Kind is the kind of credential a shape says.
type Kind int

// Kinds.
const (
	None Kind = iota
	JWT
	Token // a keybroker token
	Key   // a keybroker caller key
)

func (k Kind) String() string {
	return [...]string{"none", "JWT", "keybroker token", "caller key"}[k]
}

// Find returns the kind of the first credential-shaped run in s, where a
// run is a maximal stretch of base64url characters and dots (so that one
// embedded in other text, "Bearer eyJ…" or "x:kbt.…", is found too).
// None when there is none.
func Find(s string) Kind {
	for i := 0; i < len(s); {
		if !runByte(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && runByte(s[j]) {
			j++
		}
		if k := kindOf(s[i:j]); k != None {
			return k
		}
		i = j
	}
	return None
}

// runByte: base64url's alphabet and the dot that separates segments.
func runByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
}

// kindOf judges one run: a keybroker token or key by its prefix (and a
// length a real one has), a JWT by its segments.
func kindOf(run string) Kind {
	switch {
	case strings.HasPrefix(run, TokenPrefix) && len(run) >= len(TokenPrefix)+16:
		return Token
	case strings.HasPrefix(run, KeyPrefix) && len(run) >= len(KeyPrefix)+32:
		return Key
	case isJWT(run):
		return JWT
	}
	return None
}

// isJWT: three segments (JWS compact) or five (JWE compact, whose second
// may be empty), the first decoding to a JSON object: the JOSE header.
func isJWT(run string) bool {
	n := strings.Count(run, ".")
	if n != 2 && n != 4 {
		return false
	}
	head, _, _ := strings.Cut(run, ".")
	if len(head) < 8 {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return false
	}
	var obj map[string]json.RawMessage
	return json.Unmarshal(raw, &obj) == nil
}

// FindEscaped is Find on s and on s unescaped as a query component, once
// and twice: a token percent-encoded, even twice over, is still found
// (whoever reads the value may decode it as often).
func FindEscaped(s string) Kind {
	for range 3 {
		if k := Find(s); k != None {
			return k
		}
		if !strings.ContainsAny(s, "%+") {
			return None
		}
		d, err := url.QueryUnescape(s)
		if err != nil || d == s {
			return None
		}
		s = d
	}
	return None
}
