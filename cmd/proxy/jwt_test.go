package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/jwttest"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// TestServe_JWTCallers: a caller identified by its Kubernetes token, keys
// from a JWKS file; the cluster's signing key rotates (a new kid in the
// file) and the next token works at once. An issuer that cannot be
// reached is named in /readyz (still ready: other callers are served) and
// the key-availability metric.
func TestServe_JWTCallers(t *testing.T) {
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk_j", "hs_PLANTED_j", vendortest.HuntressOptions{})
	defer hunt.Close()
	is := jwttest.New(t, "https://kubernetes.default.svc.cluster.local")
	jwks := filepath.Join(dir, "jwks.json")
	is.WriteJWKS(jwks)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	cred := filepath.Join(dir, "h.json")
	mustWrite(t, cred, `{"api_key":"hk_j","api_secret":"hs_PLANTED_j"}`)
	cfg := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfg, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - {name: huntress, preset: huntress, url: %s, credential: {file: {path: %s}}}
callers:
  - name: soar
    jwt: {issuer: %q, audience: keybroker, subject: "system:serviceaccount:soar:workflows", jwks_file: %s}
  - name: ghost
    jwt: {issuer: %q, audience: keybroker, subject: someone}
audit: {path: %s}
`, hunt.URL, cred, is.URL, jwks, dead, filepath.Join(dir, "audit.log")))
	listen, admin, stop, stderr := startServe(t, cfg)
	waitReady(t, "http://"+admin+"/readyz")
	call := func(tok string) int {
		req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/agents", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	sub := "system:serviceaccount:soar:workflows"
	first := is.Sign(is.Claims(sub, "keybroker", 10*time.Minute))
	st := call(first)
	for deadline := time.Now().Add(5 * time.Second); st == 503 && time.Now().Before(deadline); st = call(first) {
		time.Sleep(20 * time.Millisecond)
	}
	if st != 200 {
		t.Fatalf("a service-account token: %d", st)
	}
	is.Rotate("key-2")
	is.WriteJWKS(jwks)
	second := is.Sign(is.Claims(sub, "keybroker", 10*time.Minute))
	if st := call(second); st != 200 {
		t.Errorf("a token of the rotated key: %d", st)
	}

	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var rd map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&rd)
	resp.Body.Close()
	un, _ := rd["identity_unavailable"].([]any)
	if resp.StatusCode != 200 || len(un) != 1 || !strings.Contains(fmt.Sprint(un[0]), dead) {
		t.Errorf("/readyz %d %v: want ready, naming the unreachable issuer", resp.StatusCode, rd)
	}
	m := scrapeRaw(t, admin)
	if !strings.Contains(m, `keybroker_jwt_issuer_keys_available{issuer="`+is.URL+`"} 1`) ||
		!strings.Contains(m, `keybroker_jwt_issuer_keys_available{issuer="`+dead+`"} 0`) {
		t.Errorf("issuer metrics:\n%s", grepLines(m, "keybroker_jwt_issuer"))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	for _, tok := range []string{first, second} {
		if strings.Contains(string(raw)+stderr.String(), tok) {
			t.Error("a token reached the audit or the log")
		}
	}
}
