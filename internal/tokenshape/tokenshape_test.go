package tokenshape

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

func TestFindEscaped(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	jwt := b64([]byte(`{"alg":"RS256","kid":"k1"}`)) + "." + b64([]byte(`{"sub":"x"}`)) + ".c2ln"
	spaced := b64([]byte(`{ "alg":"none"}`)) + "." + b64([]byte(`{}`)) + "."
	jwe := b64([]byte(`{"alg":"dir","enc":"A256GCM"}`)) + "..aXY.Y3Q.dGFn"
	kbt := "kbt.k1.eyJjIjoic29hciJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
	kbk := "kbk_" + strings.Repeat("A", 43)
	cases := []struct {
		name, in string
		want     Kind
	}{
		{"JWT", jwt, JWT},
		{"JWT whose header starts with a space", spaced, JWT},
		{"JWE (five segments)", jwe, JWT},
		{"JWT after Bearer", "Bearer " + jwt, JWT},
		{"JWT percent-encoded", url.QueryEscape("Bearer " + jwt), JWT},
		{"JWT with every letter escaped", strings.ReplaceAll(url.PathEscape(jwt), "e", "%65"), JWT},
		{"JWT escaped twice", url.QueryEscape(url.QueryEscape("x:" + jwt)), JWT},
		{"keybroker token", kbt, Token},
		{"keybroker token in text", "t=" + kbt, Token},
		{"caller key", kbk, Key},
		{"base64 JSON, one segment (a page token)", b64([]byte(`{"page":2,"cursor":"abc"}`)), None},
		{"dotted host name", "api.huntress.io", None},
		{"version string", "2.10.3", None},
		{"three segments, not a JSON header", "abcdefgh.ijk.lmn", None},
		{"short kbt prefix", "kbt.x", None},
		{"empty", "", None},
		{"bad escape", "%zz", None},
	}
	for _, tc := range cases {
		if got := FindEscaped(tc.in); got != tc.want {
			t.Errorf("%s: FindEscaped(%q) = %v; want %v", tc.name, tc.in, got, tc.want)
		}
	}
}
