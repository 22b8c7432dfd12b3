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

// TestServe_RejectedRotationIsVisible: a rotated Huntress secret the vendor
// refuses is held back by the background refresh. Calls keep working on
// the version in use, and the rejection shows in /readyz
// (credential_rejected), the keybroker_credential_rejected metric,
// `keybroker credentials` and the audit trail (the probe as a call of
// caller keybroker, and a credential_rejected event). Fixing the secret
// clears it all.
func TestServe_RejectedRotationIsVisible(t *testing.T) {
	hunt := vendortest.NewHuntress("hk_probe", "hs_probe_good_secret", vendortest.HuntressOptions{})
	defer hunt.Close()
	ps := probedServe(t, hunt, "hk_probe", "hs_probe_good_secret")
	listen, admin, stop, stderr, key, auditPath, writeCred := ps.listen, ps.admin, ps.stop, ps.stderr, ps.key, ps.auditPath, ps.writeCred
	call := func() int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/agents", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := call(); got != 200 {
		t.Fatalf("first call: %d", got)
	}
	readyz := func() []string { return readyRejected(t, admin) }
	metric := func() string {
		t.Helper()
		return grepLines(scrapeRaw(t, admin), `keybroker_credential_rejected{`)
	}

	writeCred("hs_probe_typo_secret")
	deadline := time.Now().Add(10 * time.Second)
	for len(readyz()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := readyz(); len(got) != 1 || got[0] != "huntress" {
		t.Fatalf("credential_rejected = %v, want [huntress]", got)
	}
	if got := call(); got != 200 {
		t.Fatalf("call while the bad secret sits in the source: %d, want 200 on the version in use", got)
	}
	if m := metric(); m != `keybroker_credential_rejected{upstream="huntress"} 1` {
		t.Errorf("metric = %q", m)
	}
	var table, js strings.Builder
	if code := run([]string{"credentials", "--admin", "http://" + admin}, nil, &table, &table); code != 0 {
		t.Fatalf("credentials: exit %d\n%s", code, table.String())
	}
	t.Logf("keybroker credentials:\n%s", table.String())
	for _, want := range []string{"LAST PROBE", " v2 refused", "rotation rejected"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, table.String())
		}
	}
	if code := run([]string{"credentials", "--admin", "http://" + admin, "--format", "json"}, nil, &js, &js); code != 0 {
		t.Fatalf("credentials: exit %d\n%s", code, js.String())
	}
	var doc credentialsDoc
	err := json.Unmarshal([]byte(js.String()), &doc)
	rows := doc.Credentials
	if err != nil || len(rows) != 1 {
		t.Fatalf("credentials JSON: %v\n%s", err, js.String())
	}
	if r := rows[0]; r.State != "rotation rejected" || r.Version != 1 || r.ProbeResult != "refused" || r.ProbeVersion != 2 || r.ProbeAt == nil {
		t.Errorf("credentials row %+v", r)
	}

	writeCred("hs_probe_good_secret2")
	hunt.AcceptAlso([2]string{"hk_probe", "hs_probe_good_secret2"})
	deadline = time.Now().Add(10 * time.Second)
	for len(readyz()) != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := readyz(); len(got) != 0 {
		t.Fatalf("credential_rejected = %v after the fix", got)
	}
	if m := metric(); m != `keybroker_credential_rejected{upstream="huntress"} 0` {
		t.Errorf("metric after the fix = %q", m)
	}
	if got := call(); got != 200 {
		t.Fatalf("call after the fix: %d", got)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(auditPath)
	trail := string(raw)
	for _, want := range []string{
		`"name":"credential_rejected","upstream":"huntress"`,
		`"caller":"keybroker","caller_auth":"internal"`,
		`"validated":true`,
	} {
		if !strings.Contains(trail, want) {
			t.Errorf("the audit trail lacks %s:\n%s", want, trail)
		}
	}
	for _, secret := range []string{"hs_probe_good_secret", "hs_probe_typo_secret"} {
		if strings.Contains(trail+stderr.String()+js.String()+table.String(), secret) {
			t.Errorf("secret %s leaked", secret[:9])
		}
	}
}

// TestServe_ARevertedRotationClearsItsRejection: through the binary, a
// broken value written to a file credential is held back
// (credential_rejected); putting the good value back clears /readyz, the
// keybroker_credential_rejected metric and `keybroker credentials` at the
// next read, without a restart.
func TestServe_ARevertedRotationClearsItsRejection(t *testing.T) {
	hunt := vendortest.NewHuntress("hk_revert", "hs_revert_good_secret", vendortest.HuntressOptions{})
	defer hunt.Close()
	ps := probedServe(t, hunt, "hk_revert", "hs_revert_good_secret")
	admin, stop, stderr, writeCred := ps.admin, ps.stop, ps.stderr, ps.writeCred
	rejected := func() []string { return readyRejected(t, admin) }
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 10 s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	writeCred("hs_revert_broken_secret")
	waitUntil("credential_rejected", func() bool { return len(rejected()) == 1 })
	writeCred("hs_revert_good_secret")
	waitUntil("clearing of credential_rejected", func() bool { return len(rejected()) == 0 })
	if m := grepLines(scrapeRaw(t, admin), `keybroker_credential_rejected{`); m != `keybroker_credential_rejected{upstream="huntress"} 0` {
		t.Errorf("metric after the revert = %q", m)
	}
	var table strings.Builder
	if code := run([]string{"credentials", "--admin", "http://" + admin}, nil, &table, &table); code != 0 || strings.Contains(table.String(), "rejected") {
		t.Errorf("credentials after the revert (exit %d):\n%s", code, table.String())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "the source holds the version in use again") {
		t.Error("the log does not say the rejection was cleared")
	}
}

// probed is keybroker serving huntress from a file credential, refreshed
// every second, with one caller.
type probed struct {
	listen, admin, key, auditPath string
	stop                          func() error
	stderr                        *lockedBuffer
	// writeCred replaces the file credential's secret (atomically).
	writeCred func(secret string)
}

// probedServe starts keybroker in front of hunt with the file credential
// apiKey and secret, and waits until it is ready.
func probedServe(t *testing.T, hunt *vendortest.Huntress, apiKey, secret string) probed {
	t.Helper()
	dir := t.TempDir()
	key, sum, _ := callers.NewKey()
	credPath := filepath.Join(dir, "h.json")
	ps := probed{key: key, auditPath: filepath.Join(dir, "audit.log")}
	ps.writeCred = func(secret string) {
		t.Helper()
		mustWrite(t, credPath+".tmp", `{"api_key":"`+apiKey+`","api_secret":"`+secret+`"}`)
		if err := os.Rename(credPath+".tmp", credPath); err != nil {
			t.Fatal(err)
		}
	}
	ps.writeCred(secret)
	cfgPath := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - {name: huntress, preset: huntress, url: %s, credential: {file: {path: %s}}}
callers: [{name: soar, key_sha256: %s}]
secrets: {refresh_interval: 1s}
audit: {path: %s}
`, hunt.URL, credPath, sum, ps.auditPath))
	ps.listen, ps.admin, ps.stop, ps.stderr = startServe(t, cfgPath)
	waitReady(t, "http://"+ps.admin+"/readyz")
	return ps
}

// readyRejected is /readyz's credential_rejected; keybroker must stay
// ready (200) while the version in use serves.
func readyRejected(t *testing.T, admin string) []string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd struct {
		Ready    bool     `json:"ready"`
		Rejected []string `json:"credential_rejected"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil || resp.StatusCode != 200 || !rd.Ready {
		t.Fatalf("/readyz %d %v: keybroker must stay ready while the version in use serves", resp.StatusCode, err)
	}
	return rd.Rejected
}
