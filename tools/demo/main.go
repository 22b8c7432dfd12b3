// Command demo shows keybroker's whole flow offline (make demo): a real
// Vault (tools/vaultdev) seeded with demo vendor credentials, fake Huntress
// and Infocyte servers, and the keybroker binary in front of them. It calls
// as two callers (one allowed, one refused), rotates a secret in Vault, and
// prints what the vendor received (credential redacted) and the audit
// lines. Interactive, it then keeps everything running until Ctrl-C and
// prints a caller key to try it with; with -once (or no terminal) it stops
// by itself. The signed audit trail and its public key stay in -dir
// (.run/demo) for README's "For auditors" steps.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

func main() {
	proxyBin := flag.String("keybroker", ".run/bin/keybroker", "keybroker binary")
	vaultBin := flag.String("vaultdev", ".run/bin/vaultdev", "Vault test server binary")
	once := flag.Bool("once", false, "stop after the scripted calls")
	wait := flag.Bool("wait", false, "after the scripted calls, wait for Ctrl-C (SIGINT) or SIGTERM even when standard input is not a terminal")
	dir := flag.String("dir", ".run/demo", "where the demo keeps its audit trail, public key and config (emptied first)")
	flag.Parse()
	interactive := *wait || (!*once && os.Getenv("CI") == "" && isTerminal(os.Stdin))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *dir, *proxyBin, *vaultBin, interactive); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// isTerminal reports whether f is a terminal: one that answers the
// terminal ioctl. Being a character device is not enough: /dev/null is one
// too, and `make demo </dev/null` must not wait for a Ctrl-C.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func run(ctx context.Context, out io.Writer, dir, proxyBin, vaultBin string, interactive bool) error {
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}

	say("==> starting Vault (tools/vaultdev) on a loopback port")
	vault := exec.Command(vaultBin, "-addr", "127.0.0.1:0")
	vault.Stderr = os.Stderr
	vout, _ := vault.StdoutPipe()
	if err := vault.Start(); err != nil {
		return fmt.Errorf("start vaultdev (make demo builds it): %w", err)
	}
	defer stopProcess(vault)
	var ready struct{ Address, Root_token string }
	line, err := bufio.NewReader(vout).ReadString('\n')
	if err != nil || json.Unmarshal([]byte(line), &ready) != nil {
		return fmt.Errorf("vaultdev did not start: %v", err)
	}
	vc, _ := api.NewClient(&api.Config{Address: ready.Address})
	vc.SetToken(ready.Root_token)
	kv := vc.KVv2("secret")
	say("==> seeding demo credentials in Vault at secret/vendors/huntress and secret/vendors/infocyte")
	if _, err := kv.Put(ctx, "vendors/huntress", map[string]any{"api_key": "demo-key", "api_secret": "demo-secret-v1"}); err != nil {
		return err
	}
	token := strings.Repeat("d", 64)
	if _, err := kv.Put(ctx, "vendors/infocyte", map[string]any{"token": token}); err != nil {
		return err
	}

	say("==> starting fake Huntress and Infocyte (they accept only the current credential)")
	hunt := vendortest.NewHuntress("demo-key", "demo-secret-v1", vendortest.HuntressOptions{})
	defer hunt.Close()
	info := vendortest.NewInfocyte(token)
	defer info.Close()

	soarKey, soarSum, _ := callers.NewKey()
	siemKey, siemSum, _ := callers.NewKey()
	tokFile := filepath.Join(dir, "vault-token")
	auditPath := filepath.Join(dir, "audit.log")
	if err := os.WriteFile(tokFile, []byte(ready.Root_token), 0o600); err != nil {
		return err
	}
	// Neither the Vault token nor the signing key outlives the demo.
	defer os.Remove(tokFile)
	// The audit signing key, as "keybroker audit keygen" prints it.
	keys, err := exec.Command(proxyBin, "audit", "keygen").Output()
	if err != nil {
		return fmt.Errorf("keybroker audit keygen: %w", err)
	}
	var seed, publicKey string
	for _, l := range strings.Split(string(keys), "\n") {
		if v, ok := strings.CutPrefix(l, "private_key: "); ok {
			seed = v
		} else if v, ok := strings.CutPrefix(l, "public_key: "); ok {
			publicKey = v
		}
	}
	signingPath := filepath.Join(dir, "audit-signing.json")
	if err := os.WriteFile(signingPath, []byte(fmt.Sprintf(`{"private_key":%q}`, seed)), 0o600); err != nil {
		return err
	}
	defer os.Remove(signingPath)
	publicPath := filepath.Join(dir, "audit-public.key")
	if err := os.WriteFile(publicPath, []byte(publicKey+"\n"), 0o600); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "keybroker.yaml")
	listen, admin := freeAddr(), freeAddr()
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
listen: %s
admin: {listen: %q}
vault:
  address: %s
  auth: {method: token, token_file: %s}
# A long refresh, so the rotation below is picked up by the vendor's 401
# (re-read, retry) rather than by the background refresh.
secrets: {refresh_interval: 10m, max_stale: 1h}
upstreams:
  - name: huntress
    preset: huntress
    url: %q
    rate_limit: {requests: 600, per: 1m, burst: 10}   # the demo's fake; the real quota is 60/min
    credential: {vault: {mount: secret, path: vendors/huntress}}
  - {name: infocyte, preset: infocyte, url: %q, credential: {vault: {mount: secret, path: vendors/infocyte}}}
callers:
  - {name: soar-workflows, key_sha256: %s}
  - name: siem-collector
    key_sha256: %s
    allow: [{upstream: huntress, methods: [GET], paths: [/v1/agents/**]}]
audit:
  path: %s
  # Signed checkpoints: a key made by "keybroker audit keygen", read like any credential.
  signing: {credential: {file: {path: %s}}, checkpoint_interval: 1s}
`, listen, admin, ready.Address, tokFile, hunt.URL, info.BaseURL(), soarSum, siemSum, auditPath, signingPath)), 0o600); err != nil {
		return err
	}

	say("==> starting keybroker")
	kb := exec.Command(proxyBin, "serve", "-config", cfgPath)
	logFile, err := os.Create(filepath.Join(dir, "keybroker.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	kb.Stderr = logFile
	if err := kb.Start(); err != nil {
		return fmt.Errorf("start keybroker (make demo builds it): %w", err)
	}
	defer stopProcess(kb)
	if err := waitReady(ctx, "http://"+admin+"/readyz"); err != nil {
		return err
	}
	say("    callers:  http://%s    admin: http://%s/readyz, /metrics", listen, admin)

	lastID := ""
	call := func(who, key, method, path string) {
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+listen+path, nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			say("  %-15s %s %-28s -> error %v", who, method, path, err)
			return
		}
		lastID = resp.Header.Get("X-Request-Id")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		note := strings.TrimSpace(string(body))
		if len(note) > 70 {
			note = note[:70] + "…"
		}
		say("  %-15s %s %-28s -> %d %s", who, method, path, resp.StatusCode, note)
	}
	showVendor := func(reqs []vendortest.Received) {
		if len(reqs) == 0 {
			return
		}
		r := reqs[len(reqs)-1]
		say("      vendor received %s %s  Authorization: %s", r.Method, r.Path, redact(r.Header.Get("Authorization")))
	}

	say("\n==> calls")
	call("soar-workflows", soarKey, "GET", "/huntress/v1/account")
	showVendor(hunt.Requests())
	call("siem-collector", siemKey, "GET", "/huntress/v1/agents?limit=2")
	showVendor(hunt.Requests())
	call("siem-collector", siemKey, "GET", "/infocyte/Version")
	call("soar-workflows", soarKey, "GET", "/infocyte/Agents")
	showVendor(info.Requests())

	say("\n==> the security team rotates the Huntress secret in Vault (the vendor switches at once)")
	if _, err := kv.Put(ctx, "vendors/huntress", map[string]any{"api_key": "demo-key", "api_secret": "demo-secret-v2"}); err != nil {
		return err
	}
	hunt.SetCredential("demo-key", "demo-secret-v2")
	call("soar-workflows", soarKey, "GET", "/huntress/v1/organizations?limit=1")
	showVendor(hunt.Requests())
	say("      (the vendor refused the old secret %d time(s); keybroker re-read Vault and retried)", hunt.Count(http.StatusUnauthorized))

	// The last record is written as the call ends, just after its reply.
	raw, _ := os.ReadFile(auditPath)
	// Its begin line names the request too: wait for the record itself.
	ended := func(raw []byte) bool {
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.Contains(l, `"type":"call"`) && strings.Contains(l, lastID) {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !ended(raw) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		raw, _ = os.ReadFile(auditPath)
	}
	say("\n==> audit trail (%s)", auditPath)
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		say("  %s", summarize(l))
	}

	if interactive {
		say("\nkeybroker keeps running at http://%s; try:\n  curl -H 'Proxy-Authorization: Bearer %s' http://%s/huntress/v1/agents\nCtrl-C stops everything.", listen, soarKey, listen)
		<-ctx.Done()
	}
	say("\n==> stopping keybroker (its last checkpoint signs the whole trail)")
	stopProcess(kb)

	say("\n==> the auditor verifies the trail with the public key")
	say("    keybroker audit verify %s --public-key %s", auditPath, publicKey)
	verify, _ := exec.Command(proxyBin, "audit", "verify", auditPath, "--public-key", publicKey).CombinedOutput()
	say("  %s", strings.ReplaceAll(strings.TrimSpace(string(verify)), "\n", "\n  "))
	say("\n==> and reads the report (keybroker audit report %s)", auditPath)
	report, _ := exec.Command(proxyBin, "audit", "report", auditPath).CombinedOutput()
	say("%s", strings.TrimRight(string(report), "\n"))
	say("\n==> the signed trail stays for README's \"For auditors\" steps:\n    %s (public key: %s)", auditPath, publicPath)
	return nil
}

var basicRE = regexp.MustCompile(`^(Basic) .+$`)

// redact shows the scheme and length, never the credential.
func redact(v string) string {
	if v == "" {
		return "(none)"
	}
	if basicRE.MatchString(v) {
		return fmt.Sprintf("Basic <redacted, %d chars>", len(v)-6)
	}
	return fmt.Sprintf("<redacted raw token, %d chars>", len(v))
}

// summarize shortens an audit line for the screen.
func summarize(line string) string {
	var r map[string]any
	if json.Unmarshal([]byte(line), &r) != nil {
		return line
	}
	if ev, ok := r["event"].(map[string]any); ok {
		s := fmt.Sprintf("#%v event %v", r["seq"], ev["name"])
		if u, ok := ev["upstream"]; ok {
			s += fmt.Sprintf(" %v", u)
		}
		if v, ok := ev["version"]; ok {
			s += fmt.Sprintf(" v%v", v)
		}
		return s
	}
	if r["type"] == "begin" {
		// Written before the call left for the vendor; its record follows.
		return fmt.Sprintf("#%v begin %v %v /%v%v", r["seq"], orEmpty(r["caller"]), r["method"], orEmpty(r["upstream"]), orEmpty(r["path"]))
	}
	ver := ""
	if c, ok := r["credential"].(map[string]any); ok {
		ver = fmt.Sprintf("credential v%v", c["version"])
	}
	return fmt.Sprintf("#%v call %v %v /%v%v -> %v %v %v retried=%v", r["seq"], orEmpty(r["caller"]), r["method"],
		orEmpty(r["upstream"]), orEmpty(r["path"]), r["status"], r["outcome"], ver, r["retried"])
}

func orEmpty(v any) any {
	if v == nil {
		return ""
	}
	return v
}

// freeAddr returns a loopback address with a free port, for a listener
// that keybroker opens a moment later.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("keybroker not ready within 30s (see /readyz)")
}

func stopProcess(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.Process.Kill()
	}
}
