package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/secrets"
	"github.com/keybroker/keybroker/internal/vaulttest"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// TestTransit_CheckpointsSignedInsideVault: checkpoints are signed by a
// Vault transit key that never leaves Vault; a rotation of the key in the
// middle of the run moves the next checkpoints to the new version; with
// Vault stopped for two intervals calls go on, /readyz and the metric of
// the oldest unsigned record say so, and a checkpoint lands once Vault is
// back; audit keys writes the public keys of both versions, with which
// audit verify checks every signature. No key material is in the
// configuration, the log or the trail.
func TestTransit_CheckpointsSignedInsideVault(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Write("sys/mounts/transit", map[string]any{"type": "transit"})
	vs.Write("transit/keys/kb-audit", map[string]any{"type": "ed25519"})
	vs.Put("vendors/huntress", map[string]any{"api_key": "hk_t", "api_secret": "hs_PLANTED_transit"})
	hunt := vendortest.NewHuntress("hk_t", "hs_PLANTED_transit", vendortest.HuntressOptions{Limit: 1 << 30, Window: time.Second})
	t.Cleanup(hunt.Close)
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	mustWrite(t, tokFile, vs.RootToken)
	key, sum, _ := callers.NewKey()
	trail := filepath.Join(dir, "audit.log")
	cfgPath := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
vault:
  address: %s
  auth: {method: token, token_file: %s}
upstreams:
  - name: huntress
    preset: huntress
    url: %s
    rate_limit: {requests: 1000000, per: 1s, burst: 100000}
    credential: {vault: {mount: secret, path: vendors/huntress}}
callers:
  - {name: soar, key_sha256: %s}
audit:
  path: %s
  signing: {vault_transit: {mount: transit, key: kb-audit}, checkpoint_interval: 1s, checkpoint_records: 5}
`, vs.Addr, tokFile, hunt.URL, sum, trail))
	listen, admin, stop, stderr := startServe(t, cfgPath)
	waitReady(t, "http://"+admin+"/readyz")
	bs := &binSetup{t: t, listen: listen, admin: admin, key: key}

	checkpoints := func(version int) int {
		return strings.Count(stderr.String(), fmt.Sprintf(`"key_name":"kb-audit","key_version":%d`, version))
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
			bs.get("/huntress/v1/account") // a checkpoint needs new records
			if time.Now().After(deadline) {
				t.Fatalf("%s never happened:\n%s", what, stderr.String())
			}
		}
	}
	waitFor("a checkpoint signed by version 1", func() bool { return checkpoints(1) >= 2 })
	_, rd := bs.readyz()
	if sg, _ := rd["audit_signing"].(map[string]any); sg == nil || sg["source"] != "vault_transit" || sg["ref"] != "transit/kb-audit" || sg["key_id"] == "" {
		t.Errorf("/readyz audit_signing = %v", rd["audit_signing"])
	}

	vs.Write("transit/keys/kb-audit/rotate", nil)
	waitFor("a checkpoint signed by version 2", func() bool { return checkpoints(2) >= 1 })

	// Vault away for more than two intervals: calls go on; the age of the
	// oldest unsigned record grows and /readyz names the failure.
	vs.Stop()
	before := checkpoints(2)
	for i := 0; i < 25; i++ {
		if c := bs.get("/huntress/v1/account"); c != 200 {
			t.Fatalf("a call while Vault is away: %d", c)
		}
		time.Sleep(100 * time.Millisecond)
	}
	m := bs.metrics()
	var age float64
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "keybroker_audit_oldest_unsigned_age_seconds ") {
			fmt.Sscanf(strings.TrimPrefix(l, "keybroker_audit_oldest_unsigned_age_seconds "), "%g", &age)
		}
	}
	if age < 2 {
		t.Errorf("oldest unsigned record %v s old after 2.5 s without Vault", age)
	}
	if _, rd := bs.readyz(); !strings.Contains(fmt.Sprint(rd["audit_signing"]), "error:") {
		t.Errorf("/readyz does not say the checkpoints fail: %v", rd["audit_signing"])
	}
	vs.Restart()
	waitFor("a checkpoint once Vault is back", func() bool { return checkpoints(2) > before })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The public keys of both versions, as audit verify reads them.
	t.Setenv("VAULT_ADDR", vs.Addr)
	t.Setenv("VAULT_TOKEN", vs.RootToken)
	var keys, errOut bytes.Buffer
	if code := run([]string{"audit", "keys", "--vault-transit", "transit/kb-audit"}, nil, &keys, &errOut); code != 0 {
		t.Fatalf("audit keys: exit %d\n%s", code, errOut.String())
	}
	if !strings.Contains(keys.String(), "# version 1") || !strings.Contains(keys.String(), "# version 2") {
		t.Errorf("audit keys:\n%s", keys.String())
	}
	keyFile := filepath.Join(dir, "keys.txt")
	mustWrite(t, keyFile, keys.String())
	var out bytes.Buffer
	if code := run([]string{"audit", "verify", trail, "--public-keys", keyFile}, nil, &out, &out); code != 0 || !strings.Contains(out.String(), "every signature valid") {
		t.Errorf("audit verify with the transit keys: exit %d\n%s", code, out.String())
	}
	// Only a plain Ed25519 key signs: another type, or a derived key, is
	// refused by name.
	vs.Write("transit/keys/kb-aes", map[string]any{"type": "aes256-gcm96"})
	vs.Write("transit/keys/kb-derived", map[string]any{"type": "ed25519", "derived": true})
	v, err := secrets.NewVault(secrets.VaultOptions{Address: vs.Addr, Method: "token", Token: vs.RootToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"kb-aes", "kb-derived"} {
		if _, err := v.Transit("transit", k).Read(t.Context()); !errors.Is(err, secrets.ErrTransitKeyType) {
			t.Errorf("transit key %s: %v; want refused as not a plain Ed25519 key", k, err)
		}
	}

	// No key material anywhere keybroker writes: only Vault holds it.
	raw, _ := os.ReadFile(trail)
	cfg, _ := os.ReadFile(cfgPath)
	for _, b := range [][]byte{raw, cfg, []byte(stderr.String())} {
		if bytes.Contains(b, []byte("private")) || bytes.Contains(b, []byte("BEGIN")) || bytes.Contains(b, []byte("transit/export")) {
			t.Error("key material, or an export, in the trail, the configuration or the log")
		}
	}
}
