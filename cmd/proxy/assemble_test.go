package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vaulttest"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// binSetup is the real keybroker binary, its configuration file and its
// log, in front of fake vendors.
type binSetup struct {
	t                    *testing.T
	dir, cfgPath         string
	listen, admin, audit string
	key, keySum          string
	cmd                  *exec.Cmd
	stderr               *lockedBuffer
	env                  []string // added to the binary's environment
	exited               chan error
}

// wait waits for the binary to exit and returns how it ended.
func (s *binSetup) wait() error {
	err := <-s.exited
	s.exited <- err
	return err
}

func newBinSetup(t *testing.T) *binSetup {
	t.Helper()
	s := &binSetup{t: t, dir: t.TempDir(), listen: freeAddr(t), admin: freeAddr(t), stderr: &lockedBuffer{}}
	s.key, s.keySum, _ = callers.NewKey()
	s.cfgPath = filepath.Join(s.dir, "k.yaml")
	s.audit = filepath.Join(s.dir, "audit.log")
	return s
}

// write puts a configuration in place (atomically, as an operator's tool
// would): listeners, callers and audit from s, then body.
func (s *binSetup) write(body string) {
	s.t.Helper()
	doc := fmt.Sprintf("listen: %s\nadmin: {listen: %q}\ncallers:\n  - {name: soar, key_sha256: %s}\naudit: {path: %q}\n%s",
		s.listen, s.admin, s.keySum, s.audit, body)
	mustWrite(s.t, s.cfgPath+".tmp", doc)
	if err := os.Rename(s.cfgPath+".tmp", s.cfgPath); err != nil {
		s.t.Fatal(err)
	}
}

func (s *binSetup) start() {
	s.t.Helper()
	s.cmd = exec.Command(proxyBinary(s.t), "serve", "-config", s.cfgPath)
	s.cmd.Stderr = s.stderr
	s.cmd.Env = append(os.Environ(), "VAULT_TOKEN=") // keybroker reads its token from the configuration
	s.cmd.Env = append(s.cmd.Env, s.env...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan error, 1)
	exited := s.exited
	go func() { exited <- s.cmd.Wait() }()
	s.t.Cleanup(func() { _ = s.cmd.Process.Signal(syscall.SIGTERM); _ = s.wait() })
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err
			s.t.Fatalf("keybroker exited before it was ready (%v); its log:\n%s", err, s.stderr.String())
		default:
		}
		if r, err := http.Get("http://" + s.admin + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return
			}
		}
	}
	s.t.Fatalf("keybroker not ready after 20s; its log:\n%s", s.stderr.String())
}

// reload sends SIGHUP and waits for the log to say how it ended.
func (s *binSetup) reload() (accepted bool, took time.Duration) {
	s.t.Helper()
	count := func(msg string) int { return strings.Count(s.stderr.String(), msg) }
	okBefore, badBefore := count("configuration reloaded"), count("configuration rejected")
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		s.t.Fatal(err)
	}
	for time.Since(start) < 30*time.Second {
		if count("configuration reloaded") > okBefore {
			return true, time.Since(start)
		}
		if count("configuration rejected") > badBefore {
			return false, time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatal("the reload did not end")
	return false, 0
}

func (s *binSetup) get(path string) int {
	req, _ := http.NewRequest("GET", "http://"+s.listen+path, nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (s *binSetup) readyz() (int, map[string]any) {
	resp, err := http.Get("http://" + s.admin + "/readyz")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func (s *binSetup) metrics() string {
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestReload_AddsVaultToAFileOnlyProcess is the reload the architecture
// review reproduced: a process started with file credentials only is
// reloaded into a configuration that adds a vault: block and a
// Vault-backed upstream. The new upstream is served within seconds, the
// old one keeps serving throughout, and /readyz and /metrics speak of
// Vault only while the running configuration uses it.
func TestReload_AddsVaultToAFileOnlyProcess(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Put("vendors/infocyte", map[string]any{"token": "it_PLANTED_reload_token"})
	hunt := vendortest.NewHuntress("hk_r", "hs_PLANTED_reload", vendortest.HuntressOptions{Limit: 1 << 30})
	defer hunt.Close()
	info := vendortest.NewInfocyte("it_PLANTED_reload_token")
	defer info.Close()
	s := newBinSetup(t)
	mustWrite(t, filepath.Join(s.dir, "h.json"), `{"api_key":"hk_r","api_secret":"hs_PLANTED_reload"}`)
	tokFile := filepath.Join(s.dir, "vault-token")
	mustWrite(t, tokFile, vs.RootToken)
	fileOnly := fmt.Sprintf(`upstreams:
  - name: huntress
    preset: huntress
    url: %q
    rate_limit: {requests: 1000000, per: 1s, burst: 100000}
    credential: {file: {path: %q}}
`, hunt.URL, filepath.Join(s.dir, "h.json"))
	s.write(fileOnly)
	s.start()

	if code, rd := s.readyz(); code != 200 || rd["vault"] != nil {
		t.Errorf("file-only: /readyz %d %v speaks of Vault", code, rd)
	}
	if strings.Contains(s.metrics(), "keybroker_vault_") {
		t.Error("file-only: /metrics exports Vault metrics")
	}
	if c := s.get("/infocyte/Version"); c != 404 {
		t.Fatalf("infocyte before the reload: %d", c)
	}

	// Calls to the file-backed upstream go on during the reload.
	stop := make(chan struct{})
	var bad, good int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if s.get("/huntress/v1/account") == 200 {
				good++
			} else {
				bad++
			}
		}
	}()
	withVault := fileOnly + fmt.Sprintf(`  - name: infocyte
    preset: infocyte
    url: %q
    credential: {vault: {mount: secret, path: vendors/infocyte}}
vault:
  address: %s
  auth: {method: token, token_file: %q}
`, info.BaseURL(), vs.Addr, tokFile)
	s.write(withVault)
	ok, took := s.reload()
	close(stop)
	<-done
	if !ok || took > 5*time.Second {
		t.Fatalf("reload accepted %v after %s:\n%s", ok, took, s.stderr.String())
	}
	if c := s.get("/infocyte/Version"); c != 200 {
		t.Errorf("the new Vault-backed upstream: %d", c)
	}
	if bad > 0 || good == 0 {
		t.Errorf("calls to the old upstream during the reload: %d ok, %d failed", good, bad)
	}
	if _, rd := s.readyz(); rd["vault"] != "logged in" {
		t.Errorf("with Vault: /readyz vault %v", rd["vault"])
	}
	if !strings.Contains(s.metrics(), "keybroker_vault_logged_in 1") {
		t.Error("with Vault: keybroker_vault_logged_in is not 1")
	}
	t.Logf("reload adding Vault took %s; %d calls to the old upstream meanwhile, none failed", took, good)

	// And back: Vault is dropped, and no longer reported.
	s.write(fileOnly)
	if ok, _ := s.reload(); !ok {
		t.Fatal("reload back to file-only rejected")
	}
	if code, rd := s.readyz(); code != 200 || rd["vault"] != nil {
		t.Errorf("file-only again: /readyz %d %v", code, rd)
	}
	if c := s.get("/infocyte/Version"); c != 404 {
		t.Errorf("the removed upstream still answers: %d", c)
	}
}

// TestReload_RestartOnlyChangeIsRefusedAtOnce: a reload that changes the
// listen address is refused at once, naming the field and saying restart;
// the running configuration stays.
func TestReload_RestartOnlyChangeIsRefusedAtOnce(t *testing.T) {
	hunt := vendortest.NewHuntress("hk_r", "hs_PLANTED_reload", vendortest.HuntressOptions{Limit: 1 << 30})
	defer hunt.Close()
	s := newBinSetup(t)
	mustWrite(t, filepath.Join(s.dir, "h.json"), `{"api_key":"hk_r","api_secret":"hs_PLANTED_reload"}`)
	body := fmt.Sprintf("upstreams:\n  - {name: huntress, preset: huntress, url: %q, credential: {file: {path: %q}}}\n",
		hunt.URL, filepath.Join(s.dir, "h.json"))
	s.write(body)
	s.start()
	listen := s.listen
	s.listen = freeAddr(t)
	s.write(body + "server: {max_connections: 100}\n")
	s.listen = listen
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(s.stderr.String(), "configuration rejected") {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("no rejection:\n%s", s.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the refusal took %s", took)
	}
	log := s.stderr.String()
	if !strings.Contains(log, "listen, server.max_connections changed: only a restart applies it; restart keybroker") {
		t.Errorf("the refusal does not name the fields and say restart:\n%s", log)
	}
	if c := s.get("/huntress/v1/account"); c != 200 {
		t.Errorf("after the refusal: %d", c)
	}
	raw, _ := os.ReadFile(s.audit)
	if !strings.Contains(string(raw), `"name":"config_rejected","detail":"listen, server.max_connections changed`) {
		t.Error("no config_rejected event naming the fields")
	}
}
