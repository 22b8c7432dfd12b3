package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestREADME_TryItOffline walks README's "Try it" as a newcomer would, on
// a copy of the repository's dev files: `make run`'s script with the
// stand-in vendors, the README's own commands, then its curl, requests
// and pyhuntress snippets unchanged but for the base URL, and at last the
// auditor's commands on the signed trail the run left.
func TestREADME_TryItOffline(t *testing.T) {
	python := pythonWithRequests(t)
	readme := readFile(t, "../../README.md")
	root := t.TempDir()
	for _, f := range []string{"scripts/dev-run.sh", "dev/keybroker.yaml"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), []byte(readFile(t, "../../"+f)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build(t, filepath.Join(root, ".run/bin/keybroker"), "../../cmd/proxy")
	build(t, filepath.Join(root, ".run/bin/standin"), ".")
	build(t, filepath.Join(root, ".run/bin/jwtcaller"), "../../bench/jwtcaller")

	listen, admin := freeAddr(t), freeAddr(t)
	// The README's addresses, moved to free ports.
	local := func(s string) string {
		s = strings.ReplaceAll(s, "127.0.0.1:8080", listen)
		s = strings.ReplaceAll(s, "127.0.0.1:9090", admin)
		return strings.ReplaceAll(s, "http://keybroker.internal:8080", "http://"+listen)
	}
	var runOut lockedBuffer
	run := exec.Command("bash", "scripts/dev-run.sh")
	run.Dir = root
	run.Env = append(os.Environ(), "KEYBROKER_LISTEN="+listen, "KEYBROKER_ADMIN="+admin)
	run.Stdout, run.Stderr = &runOut, &runOut
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = run.Process.Signal(syscall.SIGTERM) // as Ctrl-C: the script stops keybroker, then the stand-ins
		done := make(chan error, 1)
		go func() { done <- run.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("make run's script exited with %v\n%s", err, runOut.String())
			}
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
			t.Errorf("make run's script did not stop on SIGTERM\n%s", runOut.String())
		}
	}
	t.Cleanup(stop)
	waitReady(t, "http://"+admin+"/readyz", &runOut)
	key := strings.TrimSpace(readFile(t, filepath.Join(root, "dev/secrets/soar-workflows.key")))

	// "Try it": the commands exactly as written, but for the ports.
	out := shell(t, root, nil, local(block(t, readme, "try-it:calls", "sh")))
	for _, want := range []string{`"hostname":"host-1"`, `"next_page_url":"http://` + listen + `/huntress/v1/agents?limit=2&page_token=`,
		`"hostname":"ws-01"`, `"name":"Example MSP"`, `"ready":true`, `"caller":"soar-workflows"`} {
		if !strings.Contains(out, want) {
			t.Errorf("Try it: output lacks %s\n%s", want, out)
		}
	}

	// "Add a caller": the dev JWT caller, with the token make run made.
	jwt := shell(t, root, nil, local(block(t, readme, "add-caller:jwt", "sh")))
	if !strings.Contains(jwt, `"hostname":"host-1"`) || !strings.Contains(jwt, `operation isolate_agent (respond) is not allowed for caller dev-jwt-script`) {
		t.Errorf("Add a caller, the JWT caller: output\n%s", jwt)
	}

	env := []string{"KEY=" + key}
	curl := shell(t, root, env, local(block(t, readme, "client:curl", "sh")))
	if strings.Count(curl, `"hostname":"host-`) != 20 || strings.Count(curl, `"hostname":"ws-0`) != 4 {
		t.Errorf("the curl snippets did not each get their reply:\n%s", curl)
	}

	py := pyRun(t, python, root, env, "", local(block(t, readme, "client:requests", "python")))
	for i := 1; i <= 42; i++ { // three pages of 20, through keybroker's rewritten links
		if !regexp.MustCompile(`(?m)^host-` + strconv.Itoa(i) + `$`).MatchString(py) {
			t.Errorf("the requests snippet did not list host-%d:\n%s", i, py)
			break
		}
	}
	if !strings.Contains(py, "Suspicious PowerShell") {
		t.Errorf("the requests snippet's Infocyte call failed:\n%s", py)
	}

	// pyhuntress cannot be installed here: a stand-in package replays its
	// HTTP flow (0.2.21: requests.request with its own Basic header and
	// Content-Type, base URL from _get_url()), and the README's snippet
	// runs on it unchanged.
	stub := filepath.Join(t.TempDir(), "pyhuntress")
	if err := os.MkdirAll(stub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stub, "__init__.py"), []byte(pyhuntressReplay), 0o644); err != nil {
		t.Fatal(err)
	}
	ph := pyRun(t, python, root, env, filepath.Dir(stub), local(block(t, readme, "client:pyhuntress", "python")))
	if !strings.Contains(ph, "'hostname': 'host-1'") {
		t.Errorf("the pyhuntress snippet did not list agents:\n%s", ph)
	}
	sat := pyRun(t, python, root, env, filepath.Dir(stub), local(block(t, readme, "client:pyhuntress-sat", "python")))
	if !strings.Contains(sat, "'name': 'Example MSP'") {
		t.Errorf("the pyhuntress SAT snippet did not list accounts:\n%s", sat)
	}
	ph += sat
	if !strings.Contains(readme, "pyhuntress 0.2.21") {
		t.Error("README does not name the pyhuntress version its snippet targets")
	}

	// Ctrl-C, then the auditor's steps on the trail the run left.
	stop()
	audit := shell(t, root, nil, block(t, readme, "try-it:audit", "sh"))
	for _, want := range []string{"chain intact", "every signature valid", "soar-workflows"} {
		if !strings.Contains(audit, want) {
			t.Errorf("the auditor's commands: output lacks %q\n%s", want, audit)
		}
	}
	html := readFile(t, filepath.Join(root, ".run/report.html"))
	if err := xml.NewDecoder(strings.NewReader(strings.Replace(html, "<!DOCTYPE html>", "", 1))).Decode(new(any)); err != nil && !strings.Contains(html, "<svg") {
		t.Errorf("the HTML report: %v", err)
	}

	// No secret anywhere: the caller key and the stand-ins' credentials.
	secrets := []string{key}
	for _, f := range []string{"huntress.json", "infocyte.json", "huntress-sat.json"} {
		for _, m := range regexp.MustCompile(`":"([0-9a-f]{32,})"`).FindAllStringSubmatch(readFile(t, filepath.Join(root, ".run/standin", f)), -1) {
			secrets = append(secrets, m[1])
		}
	}
	if len(secrets) != 5 {
		t.Fatalf("found %d planted secrets, want 5", len(secrets))
	}
	all := runOut.String() + out + jwt + curl + py + ph + audit + readFile(t, filepath.Join(root, ".run/audit.log")) + html
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Error("a secret (caller key or vendor credential) appeared in the output, the log or the audit trail")
		}
	}
}

// pyhuntressReplay stands in for pyhuntress 0.2.21's HuntressSIEMAPIClient
// and HuntressSATAPIClient: the same constructors, _get_url, token request
// (a form POST to _get_url() with api/v1 replaced by oauth/token, renewed
// only once its clock is past expires_in), headers and request calls.
const pyhuntressReplay = `import base64, requests
from datetime import datetime, timedelta, timezone

class _Endpoint:
    def __init__(self, client, name):
        self.client, self.name = client, name
    def get(self, params=None):
        r = requests.request("GET", f"{self.client._get_url()}/{self.name}",
                             headers=self.client._get_headers(), params=params or {})
        if not r.ok:
            raise Exception(f"{r.status_code}: {r.text}")
        return r.json()[self.name]

class HuntressSIEMAPIClient:
    def __init__(self, publickey, privatekey):
        self.publickey, self.privatekey = publickey, privatekey
        self.base64_auth = base64.b64encode(f"{publickey}:{privatekey}".encode("ascii")).decode("ascii")
    def _get_url(self):
        return "https://api.huntress.io/v1"
    def _get_headers(self):
        return {"Content-Type": "application/json", "Authorization": f"Basic {self.base64_auth}"}
    @property
    def agents(self):
        return _Endpoint(self, "agents")

class _SATEndpoint:
    def __init__(self, client, name):
        self.client, self.name = client, name
    def get(self, params=None):
        r = requests.request("GET", f"{self.client._get_url()}/{self.name}",
                             headers=self.client._get_headers(), params=params or {})
        if not r.ok:
            raise Exception(f"{r.status_code}: {r.text}")
        return r.json()["data"]

class HuntressSATAPIClient:
    def __init__(self, client_id, client_secret, api_scopes):
        self.client_id, self.client_secret, self.api_scopes = client_id, client_secret, api_scopes
        self.token_expiry_time = datetime.now(tz=timezone.utc)
        self.access_token = self._get_access_token()
    def _get_url(self):
        return "https://mycurricula.com/api/v1"
    def _get_access_token(self):
        token_url = self._get_url().replace("api/v1", "oauth/token")
        r = requests.request("POST", token_url,
                             headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
                             data={"grant_type": "client_credentials", "client_id": self.client_id,
                                   "client_secret": self.client_secret, "scope": self.api_scopes}, params={})
        if not r.ok:
            raise Exception(f"{r.status_code}: {r.text}")
        j = r.json()
        self.token_expiry_time = datetime.now(tz=timezone.utc) + timedelta(seconds=j["expires_in"])
        return j["access_token"]
    def _get_headers(self):
        if datetime.now(tz=timezone.utc) > self.token_expiry_time:
            self.access_token = self._get_access_token()
        return {"Content-Type": "application/vnd.api+json", "Accept": "application/vnd.api+json",
                "Authorization": f"Bearer {self.access_token}"}
    @property
    def accounts(self):
        return _SATEndpoint(self, "accounts")
`

// block returns the fenced code block of lang that follows the marker
// <!-- name --> in the README.
func block(t *testing.T, readme, name, lang string) string {
	t.Helper()
	i := strings.Index(readme, "<!-- "+name+" -->")
	if i < 0 {
		t.Fatalf("README has no <!-- %s --> block", name)
	}
	rest := readme[i:]
	start := strings.Index(rest, "```"+lang+"\n")
	if start < 0 {
		t.Fatalf("README's %s block is not ```%s", name, lang)
	}
	rest = rest[start+len("```"+lang+"\n"):]
	return rest[:strings.Index(rest, "```")]
}

func shell(t *testing.T, dir string, env []string, script string) string {
	t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%v running:\n%s\noutput:\n%s", err, script, out)
	}
	return string(out)
}

func pyRun(t *testing.T, python, dir string, env []string, path, script string) string {
	t.Helper()
	cmd := exec.Command(python, "-c", script)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	if path != "" {
		cmd.Env = append(cmd.Env, "PYTHONPATH="+path)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%v running:\n%s\noutput:\n%s", err, script, out)
	}
	return string(out)
}

// pythonWithRequests finds a python3 that has requests (Debian's
// python3-requests, which scripts/install-deps.sh installs). CI must have
// it; elsewhere the test is skipped with a reason.
func pythonWithRequests(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import requests").Run() == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no python3 with requests: scripts/install-deps.sh installs python3-requests")
	}
	t.Skip("no python3 with requests (apt-get install python3-requests)")
	return ""
}

func build(t *testing.T, out, pkg string) {
	t.Helper()
	if b := os.Getenv("KEYBROKER_BIN"); b != "" && strings.HasSuffix(out, "/keybroker") {
		raw, err := os.ReadFile(b)
		if err == nil {
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err == nil && os.WriteFile(out, raw, 0o755) == nil {
				return
			}
		}
	}
	if o, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, o)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(t *testing.T, url string, log *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get(url); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("keybroker not ready at %s\n%s", url, log.String())
}

// lockedBuffer collects a process's output while the test reads it.
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
