package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vaulttest"
)

// TestDemo_RunsToCompletion runs `make demo`'s flow non-interactively with
// the real binaries, as CI does.
func TestDemo_RunsToCompletion(t *testing.T) {
	vs := vaulttest.Start(t) // finds (or, in CI, insists on) the vaultdev binary
	vaultBin := os.Getenv("KEYBROKER_VAULTDEV")
	if vaultBin == "" {
		vaultBin, _ = filepath.Abs("../../.run/bin/vaultdev")
	}
	vs.Stop()
	proxyBin := filepath.Join(t.TempDir(), "keybroker")
	if out, err := exec.Command("go", "build", "-o", proxyBin, "../../cmd/proxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var out strings.Builder
	dir := filepath.Join(t.TempDir(), "demo")
	if err := run(context.Background(), &out, dir, proxyBin, vaultBin, false); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"soar-workflows  GET /huntress/v1/account         -> 200",
		"siem-collector  GET /infocyte/Version            -> 403",
		"Authorization: Basic <redacted",
		"Authorization: <redacted raw token, 64 chars>",
		"event credential_rotated huntress v2",
		"retried=true",
		"chain intact",
		"every signature valid",
		"CALLER          UPSTREAM  CALLS",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(s, "demo-secret") || strings.Contains(s, strings.Repeat("d", 64)) {
		t.Error("the demo printed a vendor secret")
	}
	// The trail and its public key stay, and verify with the auditor's command.
	pub, err := os.ReadFile(filepath.Join(dir, "audit-public.key"))
	if err != nil {
		t.Fatal(err)
	}
	verify, err := exec.Command(proxyBin, "audit", "verify", filepath.Join(dir, "audit.log"), "--public-key", strings.TrimSpace(string(pub))).CombinedOutput()
	if err != nil || !strings.Contains(string(verify), "every signature valid") {
		t.Errorf("the kept trail does not verify: %v\n%s", err, verify)
	}
	for _, gone := range []string{"audit-signing.json", "vault-token"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s outlived the demo", gone)
		}
	}
	if t.Failed() {
		t.Log(s)
	}
}

// TestIsTerminal_DevNullIsNoTerminal: /dev/null is a character device but
// no terminal, so `make demo </dev/null` runs to completion; a
// pseudo-terminal is one.
func TestIsTerminal_DevNullIsNoTerminal(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if isTerminal(null) {
		t.Error("/dev/null taken for a terminal")
	}
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	if !isTerminal(ptmx) {
		t.Error("a pseudo-terminal's master not taken for a terminal")
	}
}

// TestDemo_CtrlCUnderMakeEndsCleanly: `make demo` waiting for Ctrl-C gets
// SIGINT, as a terminal sends it to the whole foreground group (make, the
// demo, its keybroker and Vault): the demo finishes its auditor's steps and
// make reports no error.
func TestDemo_CtrlCUnderMakeEndsCleanly(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make here")
	}
	vs := vaulttest.Start(t)
	vaultBin := os.Getenv("KEYBROKER_VAULTDEV")
	if vaultBin == "" {
		vaultBin, _ = filepath.Abs("../../.run/bin/vaultdev")
	}
	vs.Stop()
	tmp := t.TempDir()
	cmd := exec.Command(makeBin, "-s", "-C", "../..", "demo", "BIN="+tmp, "VAULTDEV="+vaultBin, "DEMO_FLAGS=-wait -dir "+filepath.Join(tmp, "demo"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }()
	deadline := time.After(3 * time.Minute)
	for !strings.Contains(out.String(), "Ctrl-C stops everything") {
		select {
		case err := <-done:
			t.Fatalf("make demo ended before waiting: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("make demo never waited for Ctrl-C\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatalf("make demo did not end on Ctrl-C\n%s", out.String())
	}
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && !ee.Exited()) { // make may end by the signal itself
		t.Errorf("make demo after Ctrl-C: %v", err)
	}
	s := out.String()
	if strings.Contains(s, "make: ***") || strings.Contains(s, "Error 1") {
		t.Errorf("make reported an error on Ctrl-C:\n%s", s)
	}
	if !strings.Contains(s, "every signature valid") {
		t.Errorf("the demo did not finish its auditor's steps after Ctrl-C:\n%s", s)
	}
}

// lockedBuffer is an output both of make's streams write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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
