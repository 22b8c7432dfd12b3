package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vaulttest"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// vaultSetup is keybroker in front of the Huntress fake with its credential
// in a real Vault, logged in with a token file.
type vaultSetup struct {
	vs                   *vaulttest.Server
	hunt                 *vendortest.Huntress
	key                  string
	listen, admin, audit string
	stop                 func() error
	stderr               *lockedBuffer
}

func newVaultSetup(t *testing.T, secretsYAML string) *vaultSetup {
	t.Helper()
	return newVaultSetupWith(t, secretsYAML, nil)
}

// newVaultSetupWith runs prepare on Vault, after version 1 of the Huntress
// secret is written and before keybroker starts.
func newVaultSetupWith(t *testing.T, secretsYAML string, prepare func(*vaulttest.Server)) *vaultSetup {
	t.Helper()
	vs := vaulttest.Start(t)
	vs.Put("vendors/huntress", map[string]any{"api_key": "hk_v1", "api_secret": "hs_PLANTED_v1"})
	if prepare != nil {
		prepare(vs)
	}
	hunt := vendortest.NewHuntress("hk_v1", "hs_PLANTED_v1", vendortest.HuntressOptions{Limit: 1 << 30, Window: time.Second})
	t.Cleanup(hunt.Close)
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	mustWrite(t, tokFile, vs.RootToken)
	key, sum, _ := callers.NewKey()
	s := &vaultSetup{vs: vs, hunt: hunt, key: key, audit: filepath.Join(dir, "audit.log")}
	cfg := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfg, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
vault:
  address: %s
  auth: {method: token, token_file: %s}
%s
upstreams:
  - name: huntress
    preset: huntress
    url: %s
    rate_limit: {requests: 1000000, per: 1s, burst: 100000}
    credential:
      vault: {mount: secret, path: vendors/huntress}
callers:
  - name: soar
    key_sha256: %s
audit: {path: %s}
log: {level: debug}
`, vs.Addr, tokFile, secretsYAML, hunt.URL, sum, s.audit))
	s.listen, s.admin, s.stop, s.stderr = startServe(t, cfg)
	waitReady(t, "http://"+s.admin+"/readyz")
	return s
}

func (s *vaultSetup) call() (int, string) {
	req, _ := http.NewRequest("GET", "http://"+s.listen+"/huntress/v1/account", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Keybroker-Error")
}

func (s *vaultSetup) auditLines(t *testing.T) []map[string]any {
	t.Helper()
	f, err := os.Open(s.audit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		_ = json.Unmarshal(sc.Bytes(), &m)
		out = append(out, m)
	}
	return out
}

func (s *vaultSetup) reads(t *testing.T) int64 {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd readiness
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &rd)
	return rd.Credentials[0].Reads
}

// TestVault_RotationUnderLoadFailsNoCall: 50 callers in a loop while the
// secret is rotated in Vault and the vendor switches to the new pair at the
// same moment. No call fails; the audit shows the version switch; Vault is
// read about once per refresh interval whatever the load.
func TestVault_RotationUnderLoadFailsNoCall(t *testing.T) {
	s := newVaultSetup(t, "secrets: {refresh_interval: 1s, max_stale: 1h}")
	readsBefore := s.reads(t)
	start := time.Now()
	var ok, failed atomic.Int64
	var failures sync.Map
	var wg sync.WaitGroup
	stopAt := time.Now().Add(4 * time.Second)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) {
				st, code := s.call()
				if st == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
					failures.Store(fmt.Sprint(st, code), true)
				}
			}
		}()
	}
	// Rotate once the load is well under way.
	for ok.Load() < 200 && time.Now().Before(stopAt) {
		time.Sleep(5 * time.Millisecond)
	}
	s.vs.Put("vendors/huntress", map[string]any{"api_key": "hk_v2", "api_secret": "hs_PLANTED_v2"})
	s.hunt.SetCredential("hk_v2", "hs_PLANTED_v2")
	wg.Wait()
	elapsed := time.Since(start)
	reads := s.reads(t) - readsBefore
	mresp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	rawMetrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rawMetrics), "keybroker_vault_logged_in 1") || !strings.Contains(string(rawMetrics), "keybroker_vault_token_ttl_seconds") {
		t.Error("vault token metrics missing")
	}
	auditRaw, _ := os.ReadFile(s.audit)
	for _, secret := range []string{s.vs.RootToken, "hs_PLANTED_v1", "hs_PLANTED_v2", s.key} {
		if strings.Contains(s.stderr.String()+string(auditRaw)+string(rawMetrics), secret) {
			t.Errorf("secret %s… in the log, audit or metrics", secret[:6])
		}
	}

	if failed.Load() != 0 {
		var kinds []string
		failures.Range(func(k, _ any) bool { kinds = append(kinds, k.(string)); return true })
		t.Errorf("%d of %d calls failed during rotation: %v", failed.Load(), ok.Load()+failed.Load(), kinds)
	}
	versions := map[float64]int{}
	retried, rotated := 0, false
	for _, r := range s.auditLines(t) {
		if c, _ := r["credential"].(map[string]any); c != nil {
			versions[c["version"].(float64)]++
		}
		if r["retried"] == true {
			retried++
		}
		if ev, _ := r["event"].(map[string]any); ev != nil && ev["name"] == "credential_rotated" && ev["old_version"] == float64(1) && ev["version"] == float64(2) {
			rotated = true
		}
	}
	if versions[1] == 0 || versions[2] == 0 || !rotated {
		t.Errorf("audit: calls per version %v, rotated event %v", versions, rotated)
	}
	// One read per refresh interval, plus at most a few forced by 401s.
	maxReads := int64(elapsed/time.Second) + 4
	t.Logf("%d calls in %v (%d retried after a vendor 401); Vault reads: %d (refresh 1s)", ok.Load(), elapsed.Round(time.Millisecond), retried, reads)
	if reads > maxReads {
		t.Errorf("%d Vault reads in %v, want at most %d", reads, elapsed, maxReads)
	}
	if strings.Contains(s.stderr.String(), "PLANTED") {
		t.Error("a secret reached the operational log")
	}
}

// TestVault_OutageServesStaleThenRecovers: Vault stops under load; calls go
// on from the cache until max_stale, then 503 credential_unavailable; Vault
// comes back and calls succeed again without a restart.
func TestVault_OutageServesStaleThenRecovers(t *testing.T) {
	s := newVaultSetup(t, "secrets: {refresh_interval: 1s, max_stale: 3s}")
	if s.vs.External {
		t.Skip("cannot stop an external Vault")
	}
	if st, _ := s.call(); st != 200 {
		t.Fatalf("before the outage: %d", st)
	}
	s.vs.Stop()
	stopped := time.Now()
	for time.Since(stopped) < 1500*time.Millisecond {
		if st, code := s.call(); st != 200 {
			t.Fatalf("%v into the outage: %d %s, want the cached credential", time.Since(stopped), st, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var st int
	var code string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if st, code = s.call(); st == 503 {
			break
		}
	}
	if st != 503 || code != "credential_unavailable" {
		t.Fatalf("past max_stale: %d %s, want 503 credential_unavailable", st, code)
	}
	if resp, _ := http.Get("http://" + s.admin + "/readyz"); resp == nil || resp.StatusCode != 503 {
		t.Error("readyz should say not ready past max_stale")
	}
	s.vs.Restart()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if st, _ = s.call(); st == 200 {
			break
		}
	}
	if st != 200 {
		t.Fatalf("after Vault came back: %d", st)
	}
	names := map[string]bool{}
	for _, r := range s.auditLines(t) {
		if ev, _ := r["event"].(map[string]any); ev != nil {
			names[ev["name"].(string)] = true
		}
	}
	for _, n := range []string{"credential_refresh_failed", "credential_serving_stale", "credential_recovered"} {
		if !names[n] {
			t.Errorf("no %s event in the audit (have %v)", n, names)
		}
	}
}

// TestVault_LeastPrivilegePolicyAndCheckSecrets loads deploy/vault's policy
// into a real Vault, logs in with AppRole as setup.sh configures it, and runs
// `validate --check-secrets`: the configured paths are readable, any other is
// denied, and no value is printed.
func TestVault_LeastPrivilegePolicyAndCheckSecrets(t *testing.T) {
	vs := vaulttest.Start(t)
	if vs.External {
		t.Skip("needs policy and auth setup rights")
	}
	policy, err := os.ReadFile("../../deploy/vault/keybroker-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	vs.Write("sys/policies/acl/keybroker", map[string]any{"policy": string(policy)})
	vs.Write("sys/auth/approle", map[string]any{"type": "approle"})
	vs.Write("auth/approle/role/keybroker", map[string]any{"token_policies": "keybroker", "token_ttl": "1h", "token_no_default_policy": true})
	roleID, _ := vs.Client.Logical().Read("auth/approle/role/keybroker/role-id")
	sid := vs.Write("auth/approle/role/keybroker/secret-id", nil)
	vs.Put("vendors/huntress", map[string]any{"api_key": "hk", "api_secret": "hs_PLANTED_check"})
	vs.Put("vendors/huntress", map[string]any{"api_key": "hk", "api_secret": "hs_PLANTED_check2"})
	vs.Put("vendors/infocyte", map[string]any{"token": "it_PLANTED_check"})
	vs.Put("vendors/other", map[string]any{"key": "other_PLANTED"})

	dir := t.TempDir()
	sidFile := filepath.Join(dir, "secret-id")
	mustWrite(t, sidFile, sid.Data["secret_id"].(string))
	write := func(extra string) string {
		p := filepath.Join(dir, "k.yaml")
		mustWrite(t, p, fmt.Sprintf(`
vault:
  address: %s
  auth: {method: approle, role_id: %s, secret_id_file: %s}
upstreams:
  - {name: huntress, preset: huntress, credential: {vault: {mount: secret, path: vendors/huntress}}}
  - {name: infocyte, preset: infocyte, url: "https://acme.infocyte.com/api", credential: {vault: {mount: secret, path: vendors/infocyte}}}
%s
allow_anonymous: true
`, vs.Addr, roleID.Data["role_id"], sidFile, extra))
		return p
	}
	var out strings.Builder
	code := run([]string{"validate", "-config", write(""), "--check-secrets"}, nil, &out, &out)
	if code != 0 || !strings.Contains(out.String(), "logged in with method approle") ||
		!regexpMatch(`huntress\s+vault\s+secret/vendors/huntress\s+2\s+api_key=present,api_secret=present\s+ok`, out.String()) ||
		!regexpMatch(`infocyte\s+vault\s+secret/vendors/infocyte\s+1\s+token=present\s+ok`, out.String()) {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	out.Reset()
	code = run([]string{"validate", "-config", write(`  - {name: other, url: "https://x.example.com", auth: {type: header, header: X-Key, field: key}, credential: {vault: {mount: secret, path: vendors/other}}}`), "--check-secrets"}, nil, &out, &out)
	if code != 1 || !regexpMatch(`other\s+vault\s+secret/vendors/other\s+-\s+key=\?\s+vault secret/vendors/other: vault answered 403: permission denied`, out.String()) {
		t.Errorf("a path outside the policy: exit %d\n%s", code, out.String())
	}
	if strings.Contains(out.String(), "PLANTED") {
		t.Error("validate printed a secret value")
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// TestVault_RestartServesThePreviousVersionWhenTheNewestIsRefused: a bad
// version 2 was written to Vault while keybroker was down. On start, the
// vendor refuses it on the probe and accepts version 1 (?version=1), so
// version 1 serves, and /readyz, the log and the audit say why. A good
// version 3 is then proved and switched to.
func TestVault_RestartServesThePreviousVersionWhenTheNewestIsRefused(t *testing.T) {
	s := newVaultSetupWith(t, "secrets: {refresh_interval: 1s}", func(vs *vaulttest.Server) {
		vs.Put("vendors/huntress", map[string]any{"api_key": "hk_v1", "api_secret": "hs_PLANTED_v2_typo"})
	})
	readyz := func() readiness {
		t.Helper()
		resp, err := http.Get("http://" + s.admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rd readiness
		if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil || resp.StatusCode != 200 {
			t.Fatalf("/readyz %d: %v", resp.StatusCode, err)
		}
		return rd
	}
	rd := readyz()
	if len(rd.Credentials) != 1 || rd.Credentials[0].Version != 1 || fmt.Sprint(rd.CredentialRejected) != "[huntress]" {
		t.Fatalf("/readyz = %+v, want version 1 serving and huntress under credential_rejected", rd)
	}
	for i := range 5 {
		if code, kerr := s.call(); code != 200 {
			t.Fatalf("call %d on the previous version: %d %s", i, code, kerr)
		}
	}
	if !strings.Contains(s.stderr.String(), "serving the one before it") {
		t.Errorf("the log does not say the previous version serves:\n%s", s.stderr.String())
	}

	// The fix: version 3, which the vendor accepts, replaces version 1.
	s.hunt.AcceptAlso([2]string{"hk_v1", "hs_PLANTED_v3"})
	s.vs.Put("vendors/huntress", map[string]any{"api_key": "hk_v1", "api_secret": "hs_PLANTED_v3"})
	deadline := time.Now().Add(10 * time.Second)
	for readyz().Credentials[0].Version != 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if rd := readyz(); rd.Credentials[0].Version != 3 || len(rd.CredentialRejected) != 0 {
		t.Fatalf("/readyz after the fix = %+v, want version 3, nothing rejected", rd)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	var loaded, rejected, rotated map[string]any
	probes := 0
	for _, l := range s.auditLines(t) {
		ev, _ := l["event"].(map[string]any)
		switch {
		case l["caller"] == "keybroker" && l["type"] == "call":
			probes++
		case ev == nil:
		case ev["name"] == "credential_loaded":
			loaded = ev
		case ev["name"] == "credential_rejected":
			rejected = ev
		case ev["name"] == "credential_rotated":
			rotated = ev
		}
	}
	if loaded == nil || loaded["version"] != float64(1) || !strings.Contains(fmt.Sprint(loaded["detail"]), "version 2 refused by the vendor") {
		t.Errorf("credential_loaded = %v, want version 1 and why", loaded)
	}
	if rejected == nil || rejected["version"] != float64(2) || rejected["status"] != float64(401) {
		t.Errorf("credential_rejected = %v, want version 2, status 401", rejected)
	}
	if rotated == nil || rotated["version"] != float64(3) || rotated["old_version"] != float64(1) || rotated["validated"] != true {
		t.Errorf("credential_rotated = %v, want 1 → 3, validated", rotated)
	}
	if probes != 3 {
		t.Errorf("%d probes audited, want 3 (version 2, version 1, version 3)", probes)
	}
	raw, _ := os.ReadFile(s.audit)
	for _, secret := range []string{"hs_PLANTED_v1", "hs_PLANTED_v2_typo", "hs_PLANTED_v3"} {
		if strings.Contains(string(raw)+s.stderr.String(), secret) {
			t.Errorf("secret %s leaked", secret[:12])
		}
	}
}
