package proxy_test

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/jwttest"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

const (
	k8sIssuer = "https://kubernetes.default.svc.cluster.local"
	soarSA    = "system:serviceaccount:soar:workflows"
	siemSA    = "system:serviceaccount:siem:collector"
)

// jwtCallers are two Kubernetes service accounts as callers, by token.
func jwtCallers(jwks string) string {
	return fmt.Sprintf(`
callers:
  - name: soar
    jwt:
      issuer: %[1]s
      audience: keybroker
      subject: %[2]s
      claims: {"/kubernetes.io/namespace": soar}
      jwks_file: %[4]s
  - name: siem
    jwt:
      issuer: %[1]s
      audience: keybroker
      subject: %[3]s
      jwks_file: %[4]s
    allow:
      - upstream: huntress
        methods: [GET]
        paths: [/v1/agents/**]
  - name: keyed
    key_sha256: %[5]s
`, k8sIssuer, soarSA, siemSA, jwks, callers.HashKey(soarKey))
}

// waitIdentity waits until the harness's JWT issuers' keys are loaded.
func waitIdentity(t *testing.T, h *harness) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, st := range h.routes.JWT.Issuers() {
			all = all && st.Available
		}
		if all {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("JWT issuer keys never loaded")
}

// TestJWT_KubernetesServiceAccounts: callers identified by projected
// service-account tokens (issuer keys from a JWKS file). A token works in
// Proxy-Authorization and in the upstreams' header and Basic drop-in
// slots, never in a query; the audit names the caller and its subject,
// never the token; the caller's own allow rules apply.
func TestJWT_KubernetesServiceAccounts(t *testing.T) {
	is := jwttest.New(t, k8sIssuer)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	is.WriteJWKS(jwks)
	h := newHarness(t, harnessOpts{callersYAML: jwtCallers(jwks)})
	waitIdentity(t, h)
	soar := is.Sign(is.Claims(soarSA, "keybroker", 10*time.Minute))
	siem := is.Sign(is.Claims(siemSA, "keybroker", 10*time.Minute))

	resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(soar))
	if resp.StatusCode != 200 {
		t.Fatalf("soar's token: %d %s", resp.StatusCode, body)
	}
	rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
	if rec["caller"] != "soar" || rec["caller_auth"] != "jwt" || rec["subject"] != soarSA {
		t.Errorf("audit record %v: want caller soar, caller_auth jwt, subject %s", rec, soarSA)
	}
	if got := h.huntress.Requests()[0].Header.Get("Authorization"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("the vendor got Authorization %q", got)
	}
	// Drop-in slots: Infocyte's header, Huntress's Basic (user = caller).
	if resp, body := h.do("GET", "/infocyte/Agents", nil, map[string]string{"Authorization": "Bearer " + soar}); resp.StatusCode != 200 {
		t.Errorf("token in the infocyte slot: %d %s", resp.StatusCode, body)
	}
	basic := func(user, tok string) map[string]string {
		return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+tok))}
	}
	if resp, body := h.do("GET", "/huntress/v1/agents", nil, basic("soar", soar)); resp.StatusCode != 200 {
		t.Errorf("token as the Basic password: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do("GET", "/huntress/v1/agents", nil, basic("siem", soar))
	contractError(t, resp, body, 401, proxy.CodeCallerUnauthenticated)
	if !strings.Contains(body, "user name must be the token's caller's name") {
		t.Errorf("Basic with another caller's name: %s", body)
	}
	// A token is never read from a query: refused at the hygiene step.
	resp, body = h.do("GET", "/infocyte/Agents?access_token="+url.QueryEscape(soar), nil, nil)
	contractError(t, resp, body, 400, proxy.CodeBadRequest)

	// siem's own rules: GET agents only.
	if resp, _ := h.do("GET", "/huntress/v1/agents", nil, bearer(siem)); resp.StatusCode != 200 {
		t.Errorf("siem's token on its rule: %d", resp.StatusCode)
	}
	resp, body = h.do("GET", "/huntress/v1/organizations", nil, bearer(siem))
	contractError(t, resp, body, 403, proxy.CodeCallerForbidden)

	// Key callers are untouched.
	if resp, _ := h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Errorf("a key caller: %d", resp.StatusCode)
	}
	h.checkSecretsAbsent(soar, siem)
}

// TestJWT_Attacks: each forged or unfit token is refused with 401 and its
// reason, and the vendor sees nothing.
func TestJWT_Attacks(t *testing.T) {
	is := jwttest.New(t, k8sIssuer)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	is.WriteJWKS(jwks)
	h := newHarness(t, harnessOpts{callersYAML: jwtCallers(jwks)})
	waitIdentity(t, h)
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := is.Claims(soarSA, "keybroker", 10*time.Minute)
		if mod != nil {
			mod(c)
		}
		return c
	}
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: is.PublicKeyPEM()}, (&jose.SignerOptions{}).WithHeader("kid", is.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	payload := fmt.Sprintf(`{"iss":%q,"sub":%q,"aud":["keybroker"],"exp":%d,"kubernetes.io":{"namespace":"soar"}}`, k8sIssuer, soarSA, now.Add(time.Hour).Unix())
	hsObj, _ := hs.Sign([]byte(payload))
	hsTok, _ := hsObj.CompactSerialize()
	cases := []struct{ name, tok, reason string }{
		{"expired", is.Sign(claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), "expired"},
		{"not yet valid", is.Sign(claims(func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() })), "not yet valid"},
		{"wrong audience", is.Sign(claims(func(c map[string]any) { c["aud"] = []string{"vault"} })), "wrong audience"},
		{"wrong issuer", is.Sign(claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), "unknown issuer"},
		{"another key with the kid", jwttest.SignWith(t, jose.RS256, jwttest.OtherRSA(t), is.KeyID, claims(nil)), "bad signature"},
		{"alg none", jwttest.Unsigned(is.KeyID, claims(nil)), `algorithm \"none\" is not accepted`},
		{"HS256 keyed with the public key", hsTok, `algorithm \"HS256\" is not accepted`},
		{"another namespace", is.Sign(claims(func(c map[string]any) {
			c["kubernetes.io"] = map[string]any{"namespace": "default"}
		})), `claim \"/kubernetes.io/namespace\" does not match`},
		{"an unknown subject", is.Sign(is.Claims("system:serviceaccount:x:y", "keybroker", time.Minute)), "no caller is identified"},
	}
	for _, c := range cases {
		resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(c.tok))
		contractError(t, resp, body, 401, proxy.CodeCallerUnauthenticated)
		if !strings.Contains(body, c.reason) {
			t.Errorf("%s: 401 without the reason %q: %s", c.name, c.reason, body)
		}
		rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
		if rec["caller"] != nil || rec["outcome"] != "refused" {
			t.Errorf("%s: record %v", c.name, rec)
		}
	}
	if n := h.huntress.Count(0); n != 0 {
		t.Errorf("the vendor got %d requests", n)
	}
	var toks []string
	for _, c := range cases {
		toks = append(toks, c.tok)
	}
	h.checkSecretsAbsent(toks...)
}

// TestJWT_KidFloodAndIssuerDown: tokens with made-up kids, from one
// address, refused 401 and then 429 (the keyless limits), cost the issuer
// one JWKS fetch; an issuer nobody answers at makes its callers' calls
// 503 identity_unavailable, naming it, while key callers go on.
func TestJWT_KidFloodAndIssuerDown(t *testing.T) {
	is := jwttest.Serve(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	callersYAML := fmt.Sprintf(`
callers:
  - name: soar
    jwt: {issuer: %q, audience: keybroker, subject: %q}
  - name: ghost
    jwt: {issuer: %q, audience: keybroker, subject: %q}
  - name: keyed
    key_sha256: %s
`, is.URL, soarSA, dead, siemSA, callers.HashKey(soarKey))
	h := newHarness(t, harnessOpts{callersYAML: callersYAML, unidentified: proxy.UnidentifiedLimits{
		PerSource: ratelimit.Quota{Requests: 50, Per: time.Minute, Burst: 50}, Total: ratelimit.Quota{Requests: 1000, Per: time.Minute, Burst: 1000}}})
	deadline := time.Now().Add(5 * time.Second)
	for is.Fetches() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(is.Sign(is.Claims(soarSA, "keybroker", time.Minute)))); resp.StatusCode != 200 {
		t.Fatalf("a good token by discovery: %d %s", resp.StatusCode, body)
	}
	ghost := jwttest.New(t, dead)
	resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(ghost.Sign(ghost.Claims(siemSA, "keybroker", time.Minute))))
	contractError(t, resp, body, 503, proxy.CodeIdentityUnavailable)
	if !strings.Contains(body, dead) {
		t.Errorf("503 does not name the issuer: %s", body)
	}
	if resp, _ := h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Errorf("a key caller while an issuer is down: %d", resp.StatusCode)
	}
	before := is.Fetches()
	forger := jwttest.OtherRSA(t)
	statuses := map[int]int{}
	for i := range 200 {
		tok := jwttest.SignWith(t, jose.RS256, forger, fmt.Sprintf("made-up-%d", i), is.Claims(soarSA, "keybroker", time.Minute))
		resp, _ := h.do("GET", "/huntress/v1/agents", nil, bearer(tok))
		statuses[resp.StatusCode]++
	}
	fetches := is.Fetches() - before
	t.Logf("200 tokens with made-up kids: statuses %v, JWKS fetches %d", statuses, fetches)
	if fetches > 1 || statuses[200] != 0 || statuses[401] != 49 || statuses[429] != 151 {
		t.Errorf("kid flood: statuses %v, %d JWKS fetches; want 49 401s (the 50th keyless refusal was the 503), then 429s, and at most 1 fetch", statuses, fetches)
	}

}
