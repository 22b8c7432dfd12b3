package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// smallFS mounts a tmpfs of size bytes for the audit, where the test may
// (root, in CI); elsewhere it returns a plain directory and false, and the
// test checks growth only.
func smallFS(t *testing.T, size int) (string, bool) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "auditfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return dir, false
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Logf("no tmpfs here (%v: %s); checking audit growth on the plain filesystem", err, out)
		return dir, false
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir, true
}

// hardSetup is keybroker run by its own command, in front of a fake
// Huntress, with its audit on dir.
type hardSetup struct {
	listen, admin, audit, key string
	stop                      func() error
	stderr                    *lockedBuffer
}

func newHardSetup(t *testing.T, auditDir, extra string) *hardSetup {
	t.Helper()
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk_hard", "hs_PLANTED_hard_secret", vendortest.HuntressOptions{Limit: 100000})
	t.Cleanup(hunt.Close)
	key, sum, _ := callers.NewKey()
	s := &hardSetup{key: key, audit: filepath.Join(auditDir, "audit.log")}
	mustWrite(t, filepath.Join(dir, "h.json"), `{"api_key":"hk_hard","api_secret":"hs_PLANTED_hard_secret"}`)
	cfg := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfg, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - name: huntress
    preset: huntress
    url: %q
    credential: {file: {path: %q}}
    rate_limit: {requests: 100000, per: 1s, burst: 1000}
callers:
  - {name: soar, key_sha256: %s}
audit: {path: %q, min_free_bytes: 4194304}
%s`, hunt.URL, filepath.Join(dir, "h.json"), sum, s.audit, extra))
	s.listen, s.admin, s.stop, s.stderr = startServe(t, cfg)
	waitReady(t, "http://"+s.admin+"/readyz")
	return s
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *hardSetup) known(t *testing.T) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.listen+"/huntress/v1/account", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("known caller: %v", err)
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (s *hardSetup) ready(t *testing.T) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// TestServe_KeylessFloodCannotFillTheAuditDisk: several connections send
// maximal requests without a key for 10 s at an audit on a small
// filesystem. The audit grows by a bounded amount, a known caller keeps
// getting 200 and /readyz stays 200; the refusals over the limit are
// summarised. Then the disk runs low (warned) and full (calls refused,
// no torn record), and keybroker recovers and restarts on the same trail.
func TestServe_KeylessFloodCannotFillTheAuditDisk(t *testing.T) {
	fsDir, isTmpfs := smallFS(t, 16<<20)
	s := newHardSetup(t, fsDir, "")
	before := fileSize(s.audit)

	// Maximal requests: a path of invalid UTF-8 just under the 64 KiB
	// header limit, repeated in a 401's record before the fix.
	path := "/huntress/v1/agents/" + strings.Repeat("%FF", 60<<10/3)
	var sent, limited atomic.Int64
	stop := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				n, l := flood(s.listen, path, stop)
				sent.Add(n)
				limited.Add(l)
			}
		}()
	}
	var knownFailed, readyFailed int
	for time.Now().Before(stop) {
		if s.known(t) != 200 {
			knownFailed++
		}
		if code, _ := s.ready(t); code != 200 {
			readyFailed++
		}
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	growth := fileSize(s.audit) - before
	t.Logf("keyless flood: %d requests in 10 s, %d refused with 429 unrecorded; audit grew %d bytes (tmpfs: %v)",
		sent.Load(), limited.Load(), growth, isTmpfs)
	if sent.Load() < 1000 || limited.Load() < sent.Load()-200 {
		t.Errorf("flood of %d requests, %d over the limit: the limit did not hold", sent.Load(), limited.Load())
	}
	if growth > 512<<10 {
		t.Errorf("the audit grew %d bytes under a keyless flood", growth)
	}
	if knownFailed > 0 || readyFailed > 0 {
		t.Errorf("during the flood: %d known calls failed, /readyz failed %d times", knownFailed, readyFailed)
	}

	if isTmpfs {
		diskLowThenFull(t, s, fsDir)
	}

	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(s.audit)
	if !bytes.HasSuffix(raw, []byte("\n")) {
		t.Error("the audit ends in a torn line")
	}
	if n, err := audit.Verify(bytes.NewReader(raw)); err != nil {
		t.Errorf("verify after %d records: %v", n, err)
	}
	var summarised int64
	for _, l := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		var m struct {
			Event struct {
				Name  string `json:"name"`
				Count int64  `json:"count"`
			} `json:"event"`
		}
		if json.Unmarshal(l, &m) == nil && m.Event.Name == "unidentified_summary" {
			summarised += m.Event.Count
		}
	}
	if summarised != limited.Load() {
		t.Errorf("summaries count %d refusals, the flood saw %d", summarised, limited.Load())
	}
	// The trail opens again: a restart is not refused.
	w, err := audit.Open(s.audit)
	if err != nil {
		t.Fatalf("restart on the same trail: %v", err)
	}
	w.Close()
}

// flood sends keyless requests on one keep-alive connection until stop
// or the server closes it, and counts them and the 429s.
func flood(addr, path string, stop time.Time) (sent, limited int64) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, 0
	}
	defer conn.Close()
	_ = conn.SetDeadline(stop.Add(5 * time.Second))
	br := bufio.NewReader(conn)
	req := "GET " + path + " HTTP/1.1\r\nHost: kb\r\nUser-Agent: flood\r\n\r\n"
	for time.Now().Before(stop) {
		if _, err := io.WriteString(conn, req); err != nil {
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		sent++
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
		}
		if resp.Close {
			return
		}
	}
	return
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// diskLowThenFull fills the audit filesystem: below min_free_bytes
// /readyz, the metric and the log warn while calls still work; full, calls
// get 503 audit_unavailable and no torn line is left; with room again,
// calls recover.
func diskLowThenFull(t *testing.T, s *hardSetup, fsDir string) {
	filler := filepath.Join(fsDir, "filler")
	var st syscall.Statfs_t
	if err := syscall.Statfs(fsDir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	mustWrite(t, filler, strings.Repeat("x", int(free-2<<20))) // 2 MiB left: under min_free_bytes (4 MiB)

	code, rd := s.ready(t)
	disk, _ := rd["audit_disk"].(map[string]any)
	if code != 200 || disk == nil || disk["low"] != true {
		t.Errorf("low space: /readyz %d %v, want 200 with audit_disk.low", code, rd)
	}
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "keybroker_audit_disk_low 1") {
		t.Error("keybroker_audit_disk_low is not 1")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.stderr.String(), "audit filesystem low on space") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(s.stderr.String(), "audit filesystem low on space") {
		t.Error("no low-space warning in the log")
	}
	if c := s.known(t); c != 200 {
		t.Errorf("low but not full: known call %d", c)
	}

	// Full: the filler takes the rest, so the next records fit only in the
	// audit file's last block, and one is cut short by the disk.
	f, _ := os.OpenFile(filler, os.O_APPEND|os.O_WRONLY, 0o600)
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	refused := false
	for i := 0; i < 50 && !refused; i++ {
		refused = s.known(t) == http.StatusServiceUnavailable
	}
	if !refused {
		t.Fatal("a full audit disk did not refuse calls")
	}
	raw, _ := os.ReadFile(s.audit)
	if !bytes.HasSuffix(raw, []byte("\n")) {
		t.Error("a full disk left a torn line at the end of the audit")
	}
	if code, _ := s.ready(t); code != http.StatusServiceUnavailable {
		t.Errorf("full: /readyz %d", code)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for s.known(t) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("calls did not recover once the disk had room")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServe_HeldConnectionsAreCappedAndKnownCallersServed runs the real
// binary with a connection cap and opens thousands of connections that
// announce a body and never send it. Each is answered and closed (no key:
// at once; a key: at read_body_timeout), open connections never exceed
// the cap, RSS stays bounded, and a known caller is served throughout.
func TestServe_HeldConnectionsAreCappedAndKnownCallersServed(t *testing.T) {
	bin := proxyBinary(t)
	raiseFileLimit(t, 16384)
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk_held", "hs_PLANTED_held_secret", vendortest.HuntressOptions{Limit: 100000})
	defer hunt.Close()
	key, sum, _ := callers.NewKey()
	mustWrite(t, filepath.Join(dir, "h.json"), `{"api_key":"hk_held","api_secret":"hs_PLANTED_held_secret"}`)
	listen, admin := freeAddr(t), freeAddr(t)
	const capConns = 256
	mustWrite(t, filepath.Join(dir, "k.yaml"), fmt.Sprintf(`
listen: %s
admin: {listen: %q}
upstreams:
  - name: huntress
    preset: huntress
    url: %q
    credential: {file: {path: %q}}
    rate_limit: {requests: 100000, per: 1s, burst: 1000}
callers:
  - {name: soar, key_sha256: %s}
audit: {path: %q}
server: {max_connections: %d, read_body_timeout: 2s}
`, listen, admin, hunt.URL, filepath.Join(dir, "h.json"), sum, filepath.Join(dir, "audit.log"), capConns))
	cmd := exec.Command(bin, "serve", "-config", filepath.Join(dir, "k.yaml"))
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitReady(t, "http://"+admin+"/readyz")
	baseRSS := rssOf(cmd.Process.Pid)

	known := func() int {
		req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/account", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Logf("known caller: %v", err)
			return 0
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Logf("known caller: %d %s", resp.StatusCode, b)
		}
		return resp.StatusCode
	}

	// 3,000 keyless connections and 300 with a key, none sends its body.
	held := "POST /huntress/v1/agents HTTP/1.1\r\nHost: kb\r\nContent-Length: 1000\r\n"
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var maxOpen, peakRSS int64
	var knownOK, knownTotal int
	for i := 0; i < 3300; i++ {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		auth := ""
		if i%11 == 0 {
			auth = "Proxy-Authorization: Bearer " + key + "\r\n"
		}
		_, _ = io.WriteString(c, held+auth+"\r\n")
		if i%300 == 299 {
			maxOpen = max(maxOpen, openSockets(cmd.Process.Pid))
			peakRSS = max(peakRSS, rssOf(cmd.Process.Pid))
			knownTotal++
			if known() == 200 {
				knownOK++
			}
		}
	}
	for i := 0; i < 10; i++ {
		maxOpen = max(maxOpen, openSockets(cmd.Process.Pid))
		peakRSS = max(peakRSS, rssOf(cmd.Process.Pid))
		time.Sleep(300 * time.Millisecond)
	}
	knownTotal++
	if known() == 200 {
		knownOK++
	}
	t.Logf("3,300 held connections against a cap of %d: at most %d caller sockets open; RSS %d MiB at start, peak %d MiB; known caller %d/%d",
		capConns, maxOpen, baseRSS>>20, peakRSS>>20, knownOK, knownTotal)
	if maxOpen > capConns+8 { // + the two listeners and vendor connections
		t.Errorf("%d sockets open, over the cap of %d", maxOpen, capConns)
	}
	if knownOK != knownTotal {
		t.Errorf("known caller served %d of %d times", knownOK, knownTotal)
	}
	if peakRSS > 200<<20 {
		t.Errorf("RSS reached %d MiB", peakRSS>>20)
	}
	// Every held connection was answered and closed by keybroker.
	answered := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && (resp.StatusCode == 401 || resp.StatusCode == 429 || resp.StatusCode == 400) && resp.Close {
			answered++
		}
	}
	if answered != len(conns) {
		t.Errorf("%d of %d held connections were answered and closed", answered, len(conns))
	}
}

// proxyBinary is the keybroker binary as shipped (KEYBROKER_BIN, from
// make test), else one built for this test.
func proxyBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("KEYBROKER_BIN"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "keybroker")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func raiseFileLimit(t *testing.T, n uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < n {
		t.Skipf("cannot raise the open-file limit to %d (max %d): %v", n, lim.Max, err)
	}
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

// rssOf reads a process's resident set from /proc, in bytes.
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// openSockets counts a process's open sockets.
func openSockets(pid int) int64 {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	var n int64
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}
