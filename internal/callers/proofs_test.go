package callers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeTokens accepts "kbt.<caller>.<upstream>.<fingerprint>".
type fakeTokens struct{}

func (fakeTokens) IsToken(v string) bool { return strings.HasPrefix(v, "kbt.") }

func (fakeTokens) VerifyToken(_ context.Context, tok string) (TokenClaims, error) {
	p := strings.Split(tok, ".")
	if len(p) != 4 {
		return TokenClaims{}, errors.New("keybroker token malformed")
	}
	return TokenClaims{Caller: p[1], Upstream: p[2], Fingerprint: p[3]}, nil
}

func (fakeTokens) Fingerprint(k []byte) string { return "fp" + string(rune('a'+k[0]%26)) }

// fakeJWTs accepts "eyJ.<subject>.sig"; subject "down" means the issuer's
// keys cannot be had.
type fakeJWTs struct{}

func (fakeJWTs) IsJWT(v string) bool {
	return strings.HasPrefix(v, "eyJ") && strings.Count(v, ".") == 2
}

func (fakeJWTs) VerifyJWT(_ context.Context, tok string) (VerifiedToken, error) {
	sub := strings.Split(tok, ".")[1]
	if sub == "down" {
		return VerifiedToken{}, &UnavailableError{Reason: "issuer keys unavailable"}
	}
	return VerifiedToken{Issuer: "https://iss", Subject: sub, Audience: []string{"keybroker"}}, nil
}

// TestIdentify_OneOrderOfProofs: certificate, keybroker token, JWT,
// Proxy-Authorization key, drop-in, anonymous; a proof that is presented
// and does not hold ends the search.
func TestIdentify_OneOrderOfProofs(t *testing.T) {
	reg, err := NewRegistry([]Caller{
		{Name: "soar", KeySHA256: sum("kbk_soar")},
		{Name: "siem", KeySHA256: sum("kbk_siem"), Cert: &CertMatch{CommonName: "siem-collector"}},
		{Name: "k8s", JWT: &JWTMatch{Issuer: "https://iss", Audience: "keybroker", Subject: "sa"}},
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	v := Verifiers{Tokens: fakeTokens{}, JWT: fakeJWTs{}}
	soarTok := "kbt.soar.huntress." + fakeTokens{}.Fingerprint(sum("kbk_soar"))
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	slot := Slot{Basic: true, Headers: []string{"X-Access-Token"}}
	cases := []struct {
		name     string
		cert     string
		hdr      map[string]string
		wantName string
		wantAuth string
		wantErr  error // nil: none; errAny: any error
	}{
		{"certificate beats a token", "siem-collector", map[string]string{"Proxy-Authorization": "Bearer " + soarTok}, "siem", AuthCert, nil},
		{"a certificate naming nobody: the token decides", "stranger", map[string]string{"Proxy-Authorization": "Bearer " + soarTok}, "soar", AuthToken, nil},
		{"token beats a key in a slot", "", map[string]string{"Proxy-Authorization": "Bearer " + soarTok, "X-Access-Token": "kbk_siem"}, "soar", AuthToken, nil},
		{"token in a slot header", "", map[string]string{"X-Access-Token": soarTok}, "soar", AuthToken, nil},
		{"token for another upstream", "", map[string]string{"Proxy-Authorization": "Bearer kbt.soar.infocyte." + fakeTokens{}.Fingerprint(sum("kbk_soar"))}, "", AuthNone, ErrWrongUpstream},
		{"token for another key", "", map[string]string{"Proxy-Authorization": "Bearer kbt.soar.huntress.fpz"}, "", AuthNone, ErrTokenRevoked},
		{"JWT beats a key in the slot", "", map[string]string{"Proxy-Authorization": "Bearer eyJ.sa.sig", "X-Access-Token": "kbk_siem"}, "k8s", AuthJWT, nil},
		{"JWT as a Basic password under its caller's name", "", map[string]string{"Authorization": "Basic " + b64("k8s:eyJ.sa.sig")}, "k8s", AuthJWT, nil},
		{"JWT as a Basic password under another name", "", map[string]string{"Authorization": "Basic " + b64("soar:eyJ.sa.sig")}, "", AuthNone, errAny},
		{"JWT whose issuer is down", "", map[string]string{"Proxy-Authorization": "Bearer eyJ.down.sig"}, "", AuthNone, &UnavailableError{}},
		{"JWT naming nobody is not anonymous", "", map[string]string{"Proxy-Authorization": "Bearer eyJ.other.sig"}, "", AuthNone, errAny},
		{"key in Proxy-Authorization", "", map[string]string{"Proxy-Authorization": "Bearer kbk_soar"}, "soar", AuthKey, nil},
		{"unknown Proxy-Authorization key is not anonymous", "", map[string]string{"Proxy-Authorization": "Bearer kbk_nope"}, "", AuthNone, ErrUnauthenticated},
		{"drop-in", "", map[string]string{"X-Access-Token": "kbk_soar"}, "soar", AuthDropin, nil},
		{"nothing: anonymous", "", nil, "", AuthAnonymous, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/huntress/v1/agents", nil)
			for k, val := range tc.hdr {
				r.Header.Set(k, val)
			}
			if tc.cert != "" {
				r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: tc.cert}}}}}
			}
			id, err := reg.Identify(Present(r, slot, nil), "huntress", v)
			if id.Name != tc.wantName || id.Auth != tc.wantAuth {
				t.Errorf("identity %q (%s); want %q (%s)", id.Name, id.Auth, tc.wantName, tc.wantAuth)
			}
			var unavailable *UnavailableError
			switch {
			case tc.wantErr == nil && err != nil:
				t.Errorf("error %v; want none", err)
			case tc.wantErr == errAny && err == nil:
				t.Error("no error; want a refusal")
			case errors.As(tc.wantErr, &unavailable) && !errors.As(err, &unavailable):
				t.Errorf("error %v; want an UnavailableError", err)
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.As(tc.wantErr, &unavailable) && !errors.Is(err, tc.wantErr):
				t.Errorf("error %v; want %v", err, tc.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestPresentedKeys_EveryPlaceAKeyCanSit(t *testing.T) {
	r := httptest.NewRequest("GET", "/x?access_token=kbk_query&other=1", nil)
	r.Header.Set("Proxy-Authorization", "Bearer kbk_proxy")
	r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("soar:kbk_basic")))
	r.Header.Set("X-Access-Token", "kbk_header")
	got := strings.Join(Present(r, Slot{Headers: []string{"X-Access-Token"}, Params: []string{"access_token"}}, nil).Keys, " ")
	for _, want := range []string{"kbk_proxy", "soar:kbk_basic", "kbk_basic", "kbk_header", "kbk_query"} {
		if !strings.Contains(got, want) {
			t.Errorf("presented keys %q lack %q", got, want)
		}
	}
}

// TestPresented_HintTellsAnUnknownKeyFromNone: a request that sent a key
// nobody has is told so; one that sent none is told how to send one.
func TestPresented_HintTellsAnUnknownKeyFromNone(t *testing.T) {
	slot := Slot{Basic: true}
	none := httptest.NewRequest("GET", "/huntress/v1/agents", nil)
	wrong := httptest.NewRequest("GET", "/huntress/v1/agents", nil)
	wrong.Header.Set("Proxy-Authorization", "Bearer kbk_not_anyones_key")
	if h := Present(none, slot, nil).Hint(false); !strings.HasPrefix(h, "no valid caller identity: send Proxy-Authorization: Bearer <key>") {
		t.Errorf("no key: %q", h)
	}
	if h := Present(wrong, slot, nil).Hint(false); !strings.HasPrefix(h, "unknown key: no caller has the key this request sent; send Proxy-Authorization") || strings.Contains(h, "kbk_not") {
		t.Errorf("unknown key: %q", h)
	}
}
