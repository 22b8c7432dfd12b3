package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// TestServe_VendorTokenFailureIsVisible: an OAuth upstream whose token
// endpoint refuses keybroker's client credentials. Calls get a named 503;
// /readyz lists the upstream under vendor_token_failing (still ready: the
// vendor is the judge); the fetch metric counts the refusals. When the
// vendor takes the credential again, all of it clears.
func TestServe_VendorTokenFailureIsVisible(t *testing.T) {
	dir := t.TempDir()
	sat := vendortest.NewSAT("sat_client", "ss_PLANTED_right", time.Hour)
	defer sat.Close()
	sat.SetSecret("ss_PLANTED_not_what_keybroker_has")
	key, sum, _ := callers.NewKey()
	credPath := filepath.Join(dir, "sat.json")
	mustWrite(t, credPath, `{"client_id":"sat_client","client_secret":"ss_PLANTED_right"}`)
	cfgPath := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - name: huntress-sat
    preset: huntress-sat
    url: %s
    auth: {type: oauth2_client_credentials, token_url: "%s/oauth/token"}
    credential: {file: {path: %s}}
callers: [{name: soar, key_sha256: %s}]
audit: {path: %s}
`, sat.URL, sat.URL, credPath, sum, filepath.Join(dir, "audit.log")))
	listen, admin, stop, stderr := startServe(t, cfgPath)
	waitReady(t, "http://"+admin+"/readyz")
	call := func() (int, string) {
		req, _ := http.NewRequest("GET", "http://"+listen+"/huntress-sat/api/v1/accounts", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	readyz := func() (int, map[string]any) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}

	st, body := call()
	if st != 503 || !strings.Contains(body, "the vendor refused the client credentials") {
		t.Fatalf("call with refused client credentials: %d %s", st, body)
	}
	code, rd := readyz()
	failing, _ := rd["vendor_token_failing"].([]any)
	if code != 200 || len(failing) != 1 || !strings.Contains(fmt.Sprint(failing[0]), "huntress-sat") || !strings.Contains(fmt.Sprint(failing[0]), "invalid_client") {
		t.Errorf("/readyz %d %v", code, rd)
	}
	if m := grepLines(scrapeRaw(t, admin), "keybroker_oauth_token_fetches_total{"); !strings.Contains(m, `reason="first",result="refused",upstream="huntress-sat"} 1`) {
		t.Errorf("fetch metric:\n%s", m)
	}

	sat.SetSecret("ss_PLANTED_right")
	time.Sleep(1100 * time.Millisecond) // calls ask a failing endpoint at most once a second
	if st, body := call(); st != 200 {
		t.Fatalf("after the vendor took the credential again: %d %s", st, body)
	}
	if _, rd := readyz(); rd["vendor_token_failing"] != nil {
		t.Errorf("/readyz still lists a failing token endpoint: %v", rd)
	}
	metrics := scrapeRaw(t, admin)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	for tok := range sat.Tokens() {
		if strings.Contains(stderr.String()+string(raw)+metrics, tok) {
			t.Error("the vendor token reached the log, the audit or the metrics")
		}
	}
	if strings.Contains(stderr.String()+string(raw)+metrics, "ss_PLANTED") {
		t.Error("the client secret reached the log, the audit or the metrics")
	}
}
