package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vaulttest"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// TestVault_OAuthClientSecretRotation runs an OAuth upstream (the
// huntress-sat preset) with its client credential and the token signing
// key in the real Vault test server.
//   - Under load, the client secret is rotated at the vendor and in Vault:
//     keybroker proves the new version with one token fetch, serves calls
//     with the token that fetch gave, and no call fails.
//   - A drop-in client's keybroker token keeps working when the signing key
//     is rotated in Vault, and new tokens are signed with the new key.
func TestVault_OAuthClientSecretRotation(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Put("vendors/sat", map[string]any{"client_id": "sat_client", "client_secret": "ss_PLANTED_v1"})
	vs.Put("keybroker/token-signing", map[string]any{"key": "PLANTED_signing_key_v1_0123456789abcdef"})
	sat := vendortest.NewSAT("sat_client", "ss_PLANTED_v1", time.Hour)
	t.Cleanup(sat.Close)
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	mustWrite(t, tokFile, vs.RootToken)
	key, sum, _ := callers.NewKey()
	auditPath := filepath.Join(dir, "audit.log")
	cfg := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfg, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
vault:
  address: %s
  auth: {method: token, token_file: %s}
secrets: {refresh_interval: 1s}
upstreams:
  - name: huntress-sat
    preset: huntress-sat
    url: %s
    auth: {type: oauth2_client_credentials, token_url: %s/oauth/token, scope: "accounts:read"}
    credential:
      vault: {mount: secret, path: vendors/sat}
oauth:
  token_signing:
    vault: {mount: secret, path: keybroker/token-signing}
callers:
  - {name: soar, key_sha256: %s}
audit: {path: %s}
log: {level: debug}
`, vs.Addr, tokFile, sat.URL, sat.URL, sum, auditPath))
	listen, admin, stop, stderr := startServe(t, cfg)
	waitReady(t, "http://"+admin+"/readyz")
	base := "http://" + listen + "/huntress-sat"
	get := func(auth string) int {
		req, _ := http.NewRequest("GET", base+"/api/v1/accounts", nil)
		req.Header.Set("Authorization", auth)
		req.Header.Set("Accept", "application/vnd.api+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	token := func() string {
		t.Helper()
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"soar"}, "client_secret": {key}}
		resp, err := http.Post(base+"/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		tok, _ := m["access_token"].(string)
		if resp.StatusCode != 200 || tok == "" {
			t.Fatalf("token request %d %v", resp.StatusCode, m)
		}
		return tok
	}

	// Load, with a rotation of the client secret in the middle.
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	stopAt := time.Now().Add(5 * time.Second)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) {
				if get("Bearer "+key) == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	for ok.Load() < 100 && time.Now().Before(stopAt) {
		time.Sleep(5 * time.Millisecond)
	}
	sat.SetSecret("ss_PLANTED_v2") // earlier tokens stay valid until they expire
	vs.Put("vendors/sat", map[string]any{"client_id": "sat_client", "client_secret": "ss_PLANTED_v2"})
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d calls failed across the client secret rotation", failed.Load(), ok.Load()+failed.Load())
	}

	// The signing key rotates under a drop-in client's token.
	old := token()
	vs.Put("keybroker/token-signing", map[string]any{"key": "PLANTED_signing_key_v2_0123456789abcdef"})
	deadline := time.Now().Add(5 * time.Second)
	fresh := token()
	for strings.Split(fresh, ".")[1] == strings.Split(old, ".")[1] && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		fresh = token()
	}
	if strings.Split(fresh, ".")[1] == strings.Split(old, ".")[1] {
		t.Error("new tokens are not signed with the rotated key")
	}
	if st := get("Bearer " + old); st != 200 {
		t.Errorf("a token signed with the previous key: %d", st)
	}
	if st := get("Bearer " + fresh); st != 200 {
		t.Errorf("a token signed with the new key: %d", st)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The vendor: a token fetched with v2, used after the rotation.
	var v2Fetches int
	last := ""
	for _, r := range sat.Requests() {
		if r.Path == "/oauth/token" && strings.Contains(string(r.Body), "client_secret=ss_PLANTED_v2") && r.Status == 200 {
			v2Fetches++
		}
		if strings.HasPrefix(r.Path, "/api/") {
			last = r.Header.Get("Authorization")
		}
	}
	first := ""
	for _, r := range sat.Requests() {
		if strings.HasPrefix(r.Path, "/api/") {
			first = r.Header.Get("Authorization")
			break
		}
	}
	if v2Fetches != 1 || first == last {
		t.Errorf("token fetches with the new secret: %d (want 1: the proof, whose token is then used); first and last token equal: %v", v2Fetches, first == last)
	}
	raw, _ := os.ReadFile(auditPath)
	var rotated, proved bool
	versions := map[float64]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			t.Fatalf("audit line %q", line)
		}
		if c, _ := m["credential"].(map[string]any); c != nil && m["upstream"] == "huntress-sat" {
			versions[c["version"].(float64)]++
		}
		if ev, _ := m["event"].(map[string]any); ev != nil && ev["name"] == "credential_rotated" && ev["upstream"] == "huntress-sat" {
			rotated, proved = true, ev["validated"] == true
		}
	}
	if versions[1] == 0 || versions[2] == 0 || !rotated || !proved {
		t.Errorf("audit: calls per client credential version %v; rotated %v, validated %v", versions, rotated, proved)
	}
	for _, s := range []string{"ss_PLANTED_v1", "ss_PLANTED_v2", "PLANTED_signing_key", key, old, fresh} {
		if strings.Contains(stderr.String()+string(raw), s) {
			t.Errorf("%s… reached the log or the audit", s[:8])
		}
	}
	for tok := range sat.Tokens() {
		if strings.Contains(stderr.String()+string(raw), tok) {
			t.Error("a vendor token reached the log or the audit")
		}
	}
}
