// Package vaulttest starts a real Vault server for keybroker's integration
// tests: the vaultdev binary built from tools/vaultdev (Vault's own server
// code) on a free loopback port, stopped by the test. With VAULT_ADDR and
// VAULT_TOKEN set (and KEYBROKER_TEST_REAL_VAULT=1) the tests use that Vault
// instead, for example a `vault server -dev`. Imported only by tests.
package vaulttest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Server is a running Vault.
type Server struct {
	Addr      string
	RootToken string
	Client    *api.Client

	t       testing.TB
	bin     string
	dataDir string
	cmd     *exec.Cmd
	// External is true for a Vault the tests did not start.
	External bool
}

// Start starts a Vault for t. Storage persists in a temp dir, so Stop and
// Restart simulate an outage without losing secrets or tokens. It skips the
// test only outside CI when no Vault is available; in CI it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Getenv("KEYBROKER_TEST_REAL_VAULT") == "1" && os.Getenv("VAULT_ADDR") != "" {
		s := &Server{t: t, Addr: os.Getenv("VAULT_ADDR"), RootToken: os.Getenv("VAULT_TOKEN"), External: true}
		s.client()
		return s
	}
	bin := os.Getenv("KEYBROKER_VAULTDEV")
	if bin == "" {
		bin = findUp(".run/bin/vaultdev")
	}
	if _, err := os.Stat(bin); bin == "" || err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the Vault test server is missing (KEYBROKER_VAULTDEV=%q); run make test or scripts/install-deps.sh", bin)
		}
		t.Skip("no Vault test server: run `make test` (it builds tools/vaultdev) or set KEYBROKER_VAULTDEV")
	}
	s := &Server{t: t, bin: bin, dataDir: t.TempDir()}
	s.start("127.0.0.1:0")
	t.Cleanup(s.Stop)
	s.client()
	return s
}

func (s *Server) start(addr string) {
	s.t.Helper()
	cmd := exec.Command(s.bin, "-addr", addr, "-data", s.dataDir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() {
		}
	}()
	select {
	case line, ok := <-lines:
		var ready struct {
			Address   string `json:"address"`
			RootToken string `json:"root_token"`
		}
		if !ok || json.Unmarshal([]byte(line), &ready) != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			s.t.Fatalf("vaultdev did not start (line %q)", line)
		}
		s.Addr, s.RootToken, s.cmd = ready.Address, ready.RootToken, cmd
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		s.t.Fatal("vaultdev did not start within 60s")
	}
}

func (s *Server) client() {
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	c.SetToken(s.RootToken)
	s.Client = c
}

// Stop stops the server (an outage). Safe to call twice.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Restart starts the stopped server again on the same address with the same
// storage: secrets, policies and tokens survive.
func (s *Server) Restart() {
	s.t.Helper()
	addr := strings.TrimPrefix(s.Addr, "http://")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("address %s still taken", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.start(addr)
}

// Put writes a KV v2 secret under secret/ and returns its version.
func (s *Server) Put(path string, data map[string]any) int {
	s.t.Helper()
	sec, err := s.Client.KVv2("secret").Put(s.t.Context(), path, data)
	if err != nil {
		s.t.Fatalf("put %s: %v", path, err)
	}
	return sec.VersionMetadata.Version
}

// Write is a raw write (mounts, policies, roles).
func (s *Server) Write(path string, data map[string]any) *api.Secret {
	s.t.Helper()
	sec, err := s.Client.Logical().Write(path, data)
	if err != nil {
		s.t.Fatalf("write %s: %v", path, err)
	}
	return sec
}

// Token creates a token with the given policies and TTL.
func (s *Server) Token(ttl string, policies ...string) string {
	s.t.Helper()
	sec, err := s.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: policies, TTL: ttl, NoDefaultPolicy: false})
	if err != nil {
		s.t.Fatal(err)
	}
	return sec.Auth.ClientToken
}

func findUp(rel string) string {
	dir, _ := os.Getwd()
	for i := 0; i < 6; i++ {
		p := fmt.Sprintf("%s/%s", dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		dir = dir + "/.."
	}
	return ""
}
