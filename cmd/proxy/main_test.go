package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// lockedBuffer collects a command's stderr while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRun_ExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	mustWrite(t, bad, "upstreams: []\ncolers: 1\n")
	good := filepath.Join(dir, "good.yaml")
	mustWrite(t, filepath.Join(dir, "h.json"), `{"api_key":"k","api_secret":"s"}`)
	mustWrite(t, good, "upstreams: [{name: huntress, preset: huntress, url: http://127.0.0.1:9, credential: {file: {path: "+filepath.Join(dir, "h.json")+"}}}]\nallow_anonymous: true\n")
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "usage: keybroker COMMAND"},
		{[]string{"version"}, 0, "keybroker"},
		{[]string{"validate", good}, 0, "configuration OK"},
		{[]string{"validate", good, "--check-secrets"}, 0, "huntress"},
		{[]string{"validate", "-config", good}, 0, "configuration OK"},
		{[]string{"validate", bad}, 2, "colers: unknown field"},
		{[]string{"validate", good, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"validate", good, "-config", bad}, 2, "two configuration files"},
		{[]string{"nonsense"}, 2, "unknown command"},
		{[]string{"validate"}, 2, "--config FILE is required"},
		{[]string{"validate", "-config", bad}, 2, "colers: unknown field"},
		{[]string{"validate", "-config", filepath.Join(dir, "none.yaml")}, 2, "no such file"},
		{[]string{"serve", "-config", bad}, 2, "colers: unknown field"},
		{[]string{"audit", "verify"}, 2, "usage"},
		{[]string{"audit", "verify", filepath.Join(dir, "none.log")}, 1, "no such file"},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := run(tc.args, strings.NewReader(""), &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.out) {
			t.Errorf("%v: exit %d, output %q; want %d and %q", tc.args, code, out.String()+errb.String(), tc.code, tc.out)
		}
	}
}

func TestHashKey(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"hash-key"}, nil, &out, &out); code != 0 {
		t.Fatal(out.String())
	}
	m := regexp.MustCompile(`key:\s+(kbk_\S+)\nkey_sha256: ([0-9a-f]{64})`).FindStringSubmatch(out.String())
	if m == nil || callers.HashKey(m[1]) != m[2] {
		t.Fatalf("output %q", out.String())
	}
	out.Reset()
	if code := run([]string{"hash-key", "-stdin"}, strings.NewReader(m[1]+"\n"), &out, &out); code != 0 || !strings.Contains(out.String(), m[2]) {
		t.Errorf("-stdin: %q", out.String())
	}
	for _, short := range []string{"test", "fifteen-chars-x", "  padded-short  "} {
		out.Reset()
		code := run([]string{"hash-key", "-stdin"}, strings.NewReader(short+"\n"), &out, &out)
		if code != 2 || !strings.Contains(out.String(), "shorter than 16 characters") || strings.Contains(out.String(), "key_sha256") {
			t.Errorf("-stdin %q: exit %d, %q; want 2 and a refusal", short, code, out.String())
		}
	}
}

// TestValidateAndServe_RefuseAGuessableKey: the example's old key (the hash
// of "test") stops both validate and serve, naming the caller.
func TestValidateAndServe_RefuseAGuessableKey(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "weak.yaml")
	doc := "upstreams: [{name: h, url: http://127.0.0.1:1, auth: {type: header, header: X-Key, field: key}, credential: {env: {key: NOPE}}}]\n" +
		"callers:\n  - {name: soar-workflows, key_sha256: " + callers.HashKey("test") + "}\n"
	mustWrite(t, cfg, doc)
	for _, cmd := range []string{"validate", "serve"} {
		var out bytes.Buffer
		code := run([]string{cmd, "-config", cfg}, nil, &out, &out)
		if code != 2 || !strings.Contains(out.String(), `callers[0].key_sha256: caller "soar-workflows": this is the hash of a guessable key`) {
			t.Errorf("%s: exit %d, %q", cmd, code, out.String())
		}
	}
}

func TestHelp_ListsCommandsAndFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"keybroker validate", "keybroker hash-key", "keybroker audit report", "keybroker help [COMMAND]"}},
		{[]string{"help"}, []string{"keybroker validate"}},
		{[]string{"help", "validate"}, []string{"usage: keybroker validate", "-check-secrets", "-check-upstreams", "-config"}},
		{[]string{"help", "audit", "report"}, []string{"-since", "-format"}},
		{[]string{"help", "hash-key"}, []string{"--stdin"}},
		{[]string{"serve", "-h"}, []string{"-config"}},
		{[]string{"audit", "verify", "--help"}, []string{"-public-key", "-checkpoint"}},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, nil, &out, &errb)
		for _, w := range tc.want {
			if code != 0 || !strings.Contains(out.String(), w) || strings.Contains(errb.String(), "help requested") {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want %q", tc.args, code, out.String(), errb.String(), w)
				break
			}
		}
	}
}

// TestServe_EndToEnd runs the real command: config file, listeners on free
// loopback ports, a call through to the fake vendor, readiness, SIGTERM-like
// shutdown, and an audit file that verifies.
func TestServe_EndToEnd(t *testing.T) {
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk_key", "hs_PLANTED_cmd_secret", vendortest.HuntressOptions{})
	defer hunt.Close()
	key, sum, _ := callers.NewKey()
	mustWrite(t, filepath.Join(dir, "h.json"), `{"api_key":"hk_key","api_secret":"hs_PLANTED_cmd_secret"}`)
	cfgPath := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - name: huntress
    preset: huntress
    url: %s
    credential: {file: {path: %s}}
callers:
  - name: soar
    key_sha256: %s
audit: {path: %s}
`, hunt.URL, filepath.Join(dir, "h.json"), sum, filepath.Join(dir, "audit.log")))

	var out bytes.Buffer
	if code := run([]string{"validate", "-config", cfgPath, "--check-secrets"}, nil, &out, &out); code != 0 ||
		!strings.Contains(out.String(), "api_key=present,api_secret=present") {
		t.Fatalf("validate --check-secrets: %s", out.String())
	}
	if strings.Contains(out.String(), "PLANTED") {
		t.Error("validate printed a secret")
	}

	listen, admin, stop, stderr := startServe(t, cfgPath)
	waitReady(t, "http://"+admin+"/readyz")

	req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/account", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("call: %v %v", err, resp)
	}
	resp.Body.Close()
	if h, _ := http.Get("http://" + admin + "/healthz"); h == nil || h.StatusCode != 200 {
		t.Error("healthz")
	}

	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	f, _ := os.Open(filepath.Join(dir, "audit.log"))
	n, err := audit.Verify(f)
	f.Close()
	if err != nil || n < 3 { // credential_loaded, the call, shutdown
		t.Errorf("audit: %d records, %v", n, err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	if strings.Contains(string(raw)+stderr.String(), "PLANTED") || strings.Contains(string(raw)+stderr.String(), key) {
		t.Error("a secret leaked into the audit file or the log")
	}
	if !strings.Contains(string(raw), `"caller":"soar"`) {
		t.Errorf("no call record: %s", raw)
	}
}

// startServe runs serveCmd on cfgPath and returns its addresses, a stop
// function (the SIGTERM path) and its operational log.
func startServe(t *testing.T, cfgPath string) (listen, admin string, stop func() error, stderr *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr = &lockedBuffer{}
	done := make(chan error, 1)
	addrs := make(chan [2]string, 1)
	ready := func(l, a net.Addr) { addrs <- [2]string{l.String(), a.String()} }
	go func() { done <- serveCmd(ctx, []string{"-config", cfgPath}, stderr, io.Discard, ready) }()
	select {
	case got := <-addrs:
		listen, admin = got[0], got[1]
	case err := <-done:
		cancel()
		t.Fatalf("serve ended before serving: %v\n%s", err, stderr.String())
	case <-time.After(10 * time.Second):
	}
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			return fmt.Errorf("serve did not stop")
		}
	}
	t.Cleanup(func() { _ = stop() })
	if listen == "" {
		t.Fatalf("not serving: %s", stderr.String())
	}
	return listen, admin, stop, stderr
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never ready", url)
}

// TestServe_PlaceholderCredentialsAreFlagged: an example's REPLACE_WITH_
// value is named as a placeholder by validate --check-secrets and /readyz,
// and a call gets 503 credential_unavailable without reaching the vendor.
func TestServe_PlaceholderCredentialsAreFlagged(t *testing.T) {
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk_key", "hs_secret_value_1", vendortest.HuntressOptions{})
	defer hunt.Close()
	key, sum, _ := callers.NewKey()
	secret := filepath.Join(dir, "h.json")
	mustWrite(t, secret, `{"api_key":"REPLACE_WITH_HUNTRESS_API_KEY","api_secret":"REPLACE_WITH_HUNTRESS_API_SECRET"}`)
	cfgPath := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - {name: huntress, preset: huntress, url: %s, credential: {file: {path: %s}}}
callers:
  - {name: soar, key_sha256: %s}
audit: {path: %s}
`, hunt.URL, secret, sum, filepath.Join(dir, "audit.log")))
	var out bytes.Buffer
	if code := run([]string{"validate", "-config", cfgPath, "--check-secrets"}, nil, &out, &out); code != 1 ||
		!strings.Contains(out.String(), "api_key=placeholder,api_secret=placeholder") || !strings.Contains(out.String(), "placeholder credential") {
		t.Errorf("validate --check-secrets: exit %d\n%s", code, out.String())
	}

	listen, admin, stop, _ := startServe(t, cfgPath)
	defer func() { _ = stop() }()
	var ready string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ready = string(b); resp.StatusCode == 503 && strings.Contains(ready, "placeholder") {
			break
		}
	}
	if !strings.Contains(ready, `holds a placeholder`) || !strings.Contains(ready, `"ready":false`) {
		t.Errorf("/readyz does not flag the placeholder: %s", ready)
	}
	req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/account", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Keybroker-Error") != "credential_unavailable" || !strings.Contains(string(b), "placeholder credential") {
		t.Errorf("call: %d %s", resp.StatusCode, b)
	}
	if n := hunt.Count(0); n != 0 {
		t.Errorf("the vendor got %d calls", n)
	}
}

// TestBinary_ReportsItsVersion: `make build` (which builds the binary the
// tests run) stamps the version from git describe, so `keybroker version`
// and the started event say which build runs, not "devel".
func TestBinary_ReportsItsVersion(t *testing.T) {
	bin := os.Getenv("KEYBROKER_BIN")
	if bin == "" {
		t.Skip("KEYBROKER_BIN not set: run through make test")
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	v := strings.TrimSpace(strings.TrimPrefix(string(out), "keybroker"))
	if err != nil || v == "" || strings.Contains(v, "devel") {
		t.Errorf("keybroker version: %q (%v); want the version make build stamped", out, err)
	}
}

// TestValidate_EnvFileAndSkipFiles: a workstation checks a pod's
// configuration: ${VAR}s come from --env-file alone (a variable it lacks
// is unset, whatever this shell has), and --skip-files opens none of the
// mounted files, naming each it left unchecked. Values never appear.
func TestValidate_EnvFileAndSkipFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pod.yaml")
	mustWrite(t, cfg, `
listen: 127.0.0.1:8443
tls: {cert_file: /etc/keybroker/tls/tls.crt, key_file: /etc/keybroker/tls/tls.key}
upstreams:
  - {name: huntress, preset: huntress, credential: {file: {path: /etc/keybroker/huntress.json}}}
callers:
  - {name: soar, key_sha256: "${SOAR_KEY_SHA256}"}
`)
	const hash = "82afc692e8b389df4298b8d4464c066ef58a371b64f6b5da9f4caaaede381f40"
	envFile := filepath.Join(dir, "pod.env")
	mustWrite(t, envFile, "# the pod's environment\nexport SOAR_KEY_SHA256=\""+hash+"\"\n")
	var out bytes.Buffer
	if code := run([]string{"validate", cfg, "--env-file", envFile, "--skip-files"}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	for _, want := range []string{"configuration OK: 1 upstream(s), 1 caller(s)", "not checked (--skip-files): 3 file(s)",
		"tls.cert_file: /etc/keybroker/tls/tls.crt", "tls.key_file: /etc/keybroker/tls/tls.key", "upstreams.huntress.credential.file.path: /etc/keybroker/huntress.json"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// Without --skip-files the missing certificate is an error; without
	// the variable in the file it is unset even if this shell has it.
	t.Setenv("SOAR_KEY_SHA256", hash)
	mustWrite(t, envFile, "OTHER=1\n")
	out.Reset()
	code := run([]string{"validate", cfg, "--env-file", envFile}, nil, &out, &out)
	if code != 2 || !strings.Contains(out.String(), "cannot read \"/etc/keybroker/tls/tls.crt\"") ||
		!strings.Contains(out.String(), "environment variable SOAR_KEY_SHA256 is not set") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}
	mustWrite(t, envFile, "SOAR_KEY_SHA256 "+hash+"\n")
	out.Reset()
	if code := run([]string{"validate", cfg, "--env-file", envFile}, nil, &out, &out); code != 2 ||
		!strings.Contains(out.String(), "line 1: not NAME=value") || strings.Contains(out.String(), hash) {
		t.Errorf("a bad env file: exit %d:\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"validate", cfg, "--skip-files", "--check-secrets"}, nil, &out, &out); code != 2 {
		t.Errorf("--skip-files with --check-secrets: exit %d", code)
	}
}
