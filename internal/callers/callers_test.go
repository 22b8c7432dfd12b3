package callers

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func sum(key string) []byte {
	s := sha256.Sum256([]byte(key))
	return s[:]
}

func registry(anonymous bool) *Registry {
	r, err := NewRegistry([]Caller{
		{Name: "soar", KeySHA256: sum("kbk_soar")},
		{Name: "siem", KeySHA256: sum("kbk_siem"), Cert: &CertMatch{CommonName: "siem-collector"},
			Allow: []Rule{
				{Upstream: "huntress", Methods: []string{"GET"}, Paths: []string{"/v1/agents/**", "/v1/incident_reports/*"}},
				{Upstream: "infocyte", Methods: []string{"POST"}, Paths: []string{"/targets/*/scan"}},
			}},
		{Name: "svc", Cert: &CertMatch{URI: "spiffe://corp/ns/sec/sa/svc"}},
	}, anonymous)
	if err != nil {
		panic(err)
	}
	return r
}

func TestIdentify(t *testing.T) {
	basic := Slot{Basic: true}
	header := Slot{Headers: []string{"Authorization", "X-Access-Token"}, Params: []string{"access_token"}}
	query := Slot{Params: []string{"api_key"}}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name     string
		slot     Slot
		target   string
		hdr      map[string][]string
		anon     bool
		wantName string
		wantAuth string
		wantErr  bool
	}{
		{"bearer key", basic, "/", map[string][]string{"Proxy-Authorization": {"Bearer kbk_soar"}}, false, "soar", AuthKey, false},
		{"bearer scheme any case", basic, "/", map[string][]string{"Proxy-Authorization": {"bearer kbk_soar"}}, false, "soar", AuthKey, false},
		{"unknown bearer", basic, "/", map[string][]string{"Proxy-Authorization": {"Bearer kbk_nope"}}, true, "", AuthNone, true},
		{"two Proxy-Authorization", basic, "/", map[string][]string{"Proxy-Authorization": {"Bearer kbk_soar", "Bearer kbk_siem"}}, false, "", AuthNone, true},
		{"no identity", basic, "/", nil, false, "", AuthNone, true},
		{"no identity, anonymous allowed", basic, "/", nil, true, "", AuthAnonymous, false},
		{"drop-in basic", basic, "/", map[string][]string{"Authorization": {"Basic " + b64("soar:kbk_soar")}}, false, "soar", AuthDropin, false},
		{"drop-in basic, wrong name", basic, "/", map[string][]string{"Authorization": {"Basic " + b64("siem:kbk_soar")}}, false, "", AuthNone, true},
		{"drop-in basic, empty name", basic, "/", map[string][]string{"Authorization": {"Basic " + b64(":kbk_soar")}}, false, "", AuthNone, true},
		{"drop-in basic, name only", basic, "/", map[string][]string{"Authorization": {"Basic " + b64("soar:")}}, false, "", AuthNone, true},
		{"drop-in basic, lower-case scheme, empty name", basic, "/", map[string][]string{"Authorization": {"basic " + b64(":kbk_soar")}}, false, "", AuthNone, true},
		{"drop-in raw header", header, "/", map[string][]string{"Authorization": {"kbk_siem"}}, false, "siem", AuthDropin, false},
		{"drop-in bearer header", header, "/", map[string][]string{"Authorization": {"Bearer kbk_siem"}}, false, "siem", AuthDropin, false},
		{"drop-in access_token", header, "/Agents?access_token=kbk_soar", nil, false, "soar", AuthDropin, false},
		{"drop-in X-Access-Token", header, "/", map[string][]string{"X-Access-Token": {"kbk_soar"}}, false, "soar", AuthDropin, false},
		{"drop-in query param", query, "/x?api_key=kbk_soar", nil, false, "soar", AuthDropin, false},
		{"duplicate Authorization is ambiguous", header, "/", map[string][]string{"Authorization": {"kbk_soar", "kbk_siem"}}, false, "", AuthNone, true},
		{"duplicate access_token is ambiguous", header, "/x?access_token=kbk_soar&access_token=kbk_siem", nil, false, "", AuthNone, true},
		{"basic key in a header slot does not count", header, "/", map[string][]string{"Authorization": {"Basic " + b64("soar:kbk_soar")}}, false, "", AuthNone, true},
		{"empty key", header, "/", map[string][]string{"Authorization": {""}}, false, "", AuthNone, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			for k, vs := range tc.hdr {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			id, err := registry(tc.anon).Identify(Present(r, tc.slot, nil), "", Verifiers{})
			if (err != nil) != tc.wantErr || id.Name != tc.wantName || id.Auth != tc.wantAuth {
				t.Errorf("got %q/%q err %v; want %q/%q err %v", id.Name, id.Auth, err, tc.wantName, tc.wantAuth, tc.wantErr)
			}
		})
	}
}

func TestIdentify_ClientCertificate(t *testing.T) {
	u, _ := url.Parse("spiffe://corp/ns/sec/sa/svc")
	cases := []struct {
		cert *x509.Certificate
		want string
	}{
		{&x509.Certificate{Subject: pkix.Name{CommonName: "siem-collector"}}, "siem"},
		{&x509.Certificate{Subject: pkix.Name{CommonName: "x"}, URIs: []*url.URL{u}}, "svc"},
		{&x509.Certificate{Subject: pkix.Name{CommonName: "stranger"}}, ""},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{tc.cert}}}
		id, _ := registry(false).Identify(Present(r, Slot{}, nil), "", Verifiers{})
		if id.Name != tc.want || (tc.want != "" && id.Auth != AuthCert) {
			t.Errorf("cert %s: got %q/%q, want %q", tc.cert.Subject.CommonName, id.Name, id.Auth, tc.want)
		}
	}
	// An unverified certificate (no chain) identifies nobody.
	r := httptest.NewRequest("GET", "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: "siem-collector"}}}}
	if id, err := registry(false).Identify(Present(r, Slot{}, nil), "", Verifiers{}); err == nil {
		t.Errorf("unverified certificate identified %q", id.Name)
	}
}

func TestAllow(t *testing.T) {
	reg := registry(false)
	ident := func(key string) Identity {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Proxy-Authorization", "Bearer "+key)
		id, err := reg.Identify(Present(r, Slot{}, nil), "", Verifiers{})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	siem, soar := ident("kbk_siem"), ident("kbk_soar")
	cases := []struct {
		id                     Identity
		upstream, method, path string
		allowed                bool
		reason                 string
	}{
		{soar, "infocyte", "DELETE", "/anything", true, ""},
		{siem, "huntress", "GET", "/v1/agents", true, ""},
		{siem, "huntress", "GET", "/v1/agents/12/isolation", true, ""},
		{siem, "huntress", "GET", "/v1/agentsX", false, "no allow rule for GET /v1/agentsX"},
		{siem, "huntress", "GET", "/v1/incident_reports/7", true, ""},
		{siem, "huntress", "GET", "/v1/incident_reports/7/remediations", false, "GET /v1/incident_reports/7/remediations"},
		{siem, "huntress", "GET", "/v1/incident_reports", false, "GET /v1/incident_reports"},
		{siem, "huntress", "POST", "/v1/agents", false, `no allow rule for POST on upstream "huntress"`},
		{siem, "infocyte", "POST", "/targets/t1/scan", true, ""},
		{siem, "infocyte", "POST", "/targets//scan", false, ""},
		{siem, "other", "GET", "/", false, `has no allow rule for upstream "other"`},
		{Identity{Auth: AuthAnonymous}, "huntress", "POST", "/v1/x", true, ""},
	}
	for _, tc := range cases {
		d := tc.id.Allow(Action{Upstream: tc.upstream, Method: tc.method, Path: tc.path})
		if d.Allowed != tc.allowed || !strings.Contains(d.Reason, tc.reason) {
			t.Errorf("%s %s %s %s: allowed %v reason %q; want %v %q", tc.id.Name, tc.method, tc.upstream, tc.path, d.Allowed, d.Reason, tc.allowed, tc.reason)
		}
		if strings.Contains(d.Reason, "soar") && tc.id.Name == "siem" {
			t.Errorf("reason names another caller: %q", d.Reason)
		}
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		pat, path string
		want      bool
	}{
		{"/**", "/", true},
		{"/**", "/a/b", true},
		{"/v1/agents/**", "/v1/agents", true},
		{"/v1/agents/**", "/v1/agents/", true},
		{"/v1/agents/**", "/v1/agents/1/x", true},
		{"/v1/agents/**", "/v1/agent", false},
		{"/v1/*", "/v1/x", true},
		{"/v1/*", "/v1/", false},
		{"/v1/*", "/v1/x/y", false},
		{"/v1", "/v1/", false},
		{"/", "/", true},
	}
	for _, tc := range cases {
		if got := Match(tc.pat, tc.path); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.pat, tc.path, got)
		}
	}
}

func TestNewKey(t *testing.T) {
	k1, s1, err := NewKey()
	k2, _, _ := NewKey()
	if err != nil || !strings.HasPrefix(k1, KeyPrefix) || k1 == k2 || len(k1) < 40 {
		t.Fatalf("keys %q %q: %v", k1, k2, err)
	}
	if b, _ := hex.DecodeString(s1); len(b) != 32 || HashKey(k1) != s1 {
		t.Errorf("sum %q", s1)
	}
	reg, err := NewRegistry([]Caller{{Name: "x", KeySHA256: sum(k1)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Proxy-Authorization", "Bearer "+k1)
	if id, err := reg.Identify(Present(r, Slot{}, nil), "", Verifiers{}); err != nil || id.Name != "x" {
		t.Errorf("a new key does not identify its caller: %v", err)
	}
}
