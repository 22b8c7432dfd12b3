package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keybroker/keybroker/internal/vaulttest"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// TestVault_IdentityTokenCallers: the real Vault test server as the
// issuer of callers' identity. A workflow logs in to Vault with AppRole,
// fetches an identity token (identity/oidc/token/<role>) and calls through
// keybroker with it; keybroker finds Vault's keys by OIDC discovery and
// matches the claim the role's template sets (Vault's sub is the entity
// id). Vault's signing key is rotated under load: no call fails.
func TestVault_IdentityTokenCallers(t *testing.T) {
	vs := vaulttest.Start(t)
	c := vs.Client
	must := func(_ *api.Secret, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Logical().Write("identity/oidc/config", map[string]any{"issuer": vs.Addr}))
	must(c.Logical().Write("identity/oidc/key/keybroker-callers", map[string]any{
		"allowed_client_ids": "keybroker", "algorithm": "RS256", "verification_ttl": "1h", "rotation_period": "24h"}))
	must(c.Logical().Write("identity/oidc/role/soar-workflows", map[string]any{
		"key": "keybroker-callers", "ttl": "15m", "client_id": "keybroker",
		"template": `{"keybroker_caller": "soar-workflows"}`}))
	if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil && !strings.Contains(err.Error(), "path is already in use") {
		t.Fatal(err)
	}
	if err := c.Sys().PutPolicy("soar-identity", `path "identity/oidc/token/soar-workflows" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	must(c.Logical().Write("auth/approle/role/soar-workflows", map[string]any{"token_policies": "soar-identity", "token_ttl": "1h"}))
	rid, err := c.Logical().Read("auth/approle/role/soar-workflows/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := c.Logical().Write("auth/approle/role/soar-workflows/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := api.NewClient(&api.Config{Address: vs.Addr})
	if err != nil {
		t.Fatal(err)
	}
	wf.ClearToken()
	login, err := wf.Logical().Write("auth/approle/login", map[string]any{"role_id": rid.Data["role_id"], "secret_id": sid.Data["secret_id"]})
	if err != nil {
		t.Fatal(err)
	}
	wf.SetToken(login.Auth.ClientToken)
	identity := func() string {
		t.Helper()
		s, err := wf.Logical().Read("identity/oidc/token/soar-workflows")
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := s.Data["token"].(string)
		return tok
	}

	hunt := vendortest.NewHuntress("hk_v", "hs_PLANTED_vendor", vendortest.HuntressOptions{Limit: 1 << 20, Window: time.Second})
	t.Cleanup(hunt.Close)
	dir := t.TempDir()
	cred := filepath.Join(dir, "h.json")
	mustWrite(t, cred, `{"api_key":"hk_v","api_secret":"hs_PLANTED_vendor"}`)
	auditPath := filepath.Join(dir, "audit.log")
	cfg := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfg, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - {name: huntress, preset: huntress, url: %s, rate_limit: {requests: 100000, per: 1s}, credential: {file: {path: %s}}}
callers:
  - name: soar-workflows
    jwt:
      issuer: %s/v1/identity/oidc
      audience: keybroker
      claims: {"/keybroker_caller": soar-workflows}
audit: {path: %s}
`, hunt.URL, cred, vs.Addr, auditPath))
	listen, admin, stop, stderr := startServe(t, cfg)
	waitReady(t, "http://"+admin+"/readyz")
	call := func(tok string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/agents", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Vault's keys arrive by discovery, in the background.
	first := identity()
	deadline := time.Now().Add(10 * time.Second)
	st, body := call(first)
	for st == 503 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		st, body = call(first)
	}
	if st != 200 {
		t.Fatalf("a Vault identity token: %d %s", st, body)
	}

	// Rotate Vault's signing key while the workflow keeps calling, each
	// call with a fresh token (signed by whichever key is current).
	var ok, failed atomic.Int64
	var failure atomic.Value
	stopAt := time.Now().Add(3 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for time.Now().Before(stopAt) {
			if st, body := call(identity()); st == 200 {
				ok.Add(1)
			} else {
				failed.Add(1)
				failure.Store(fmt.Sprint(st, " ", body))
			}
		}
	}()
	time.Sleep(time.Second)
	must(c.Logical().Write("identity/oidc/key/keybroker-callers/rotate", map[string]any{}))
	<-done
	if failed.Load() != 0 || ok.Load() < 5 {
		t.Errorf("across Vault's key rotation: %d ok, %d failed (%v)", ok.Load(), failed.Load(), failure.Load())
	}
	t.Logf("across Vault's key rotation: %d calls, none failed", ok.Load())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(auditPath)
	var rec map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["caller"] == "soar-workflows" {
			rec = m
		}
	}
	if rec == nil || rec["caller_auth"] != "jwt" || rec["subject"] == nil || rec["subject"] == "" {
		t.Errorf("last audit record of the workflow: %v", rec)
	}
	if strings.Contains(string(raw)+stderr.String(), first) || strings.Contains(string(raw)+stderr.String(), login.Auth.ClientToken) {
		t.Error("a token reached the audit or the log")
	}
}
