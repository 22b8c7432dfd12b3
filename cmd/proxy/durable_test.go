package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
)

// trailLine is what these tests read of an audit line.
type trailLine struct {
	Seq       uint64 `json:"seq"`
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
	Method    string `json:"method"`
	BeginSeq  uint64 `json:"begin_seq"`
	Event     *struct {
		Name      string `json:"name"`
		BeginSeq  uint64 `json:"begin_seq"`
		RequestID string `json:"request_id"`
		Upstream  string `json:"upstream"`
		Method    string `json:"method"`
		Path      string `json:"path"`
		Caller    string `json:"caller"`
		Begun     string `json:"begun"`
	} `json:"event"`
}

func readTrail(t *testing.T, path string) []trailLine {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []trailLine
	for _, l := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		var tl trailLine
		if err := json.Unmarshal(l, &tl); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, tl)
	}
	return out
}

// isolationVendor is a Huntress that takes hold to answer and tells, on
// seen, the request id of every call it has received.
func isolationVendor(t *testing.T, hold time.Duration) (*vendortest.Huntress, chan string) {
	seen := make(chan string, 64)
	hunt := vendortest.NewHuntress("hk_durable", "hs_PLANTED_durable_secret", vendortest.HuntressOptions{Limit: 1000, Delay: hold,
		Received: func(r *http.Request) { seen <- r.Header.Get("X-Request-Id") }})
	t.Cleanup(hunt.Close)
	return hunt, seen
}

func (s *binSetup) writeHuntress(url string, extra string) {
	s.t.Helper()
	mustWrite(s.t, filepath.Join(s.dir, "h.json"), `{"api_key":"hk_durable","api_secret":"hs_PLANTED_durable_secret"}`)
	s.write(fmt.Sprintf(`upstreams:
  - name: huntress
    preset: huntress
    url: %q
    credential: {file: {path: %q}}
%s`, url, filepath.Join(s.dir, "h.json"), extra))
}

// post sends a POST with the request id id and returns its status (0: no
// answer, as when keybroker is killed).
func (s *binSetup) post(path, id string) int {
	req, _ := http.NewRequest("POST", "http://"+s.listen+path, strings.NewReader(`{}`))
	req.Header.Set("Proxy-Authorization", "Bearer "+s.key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSIGKILL_CallsAtTheVendorAreNamedAfterARestart: eight isolation calls
// wait at a slow vendor that has received them all; keybroker is killed
// with SIGKILL. Every request id the vendor saw is in a begin line; after a
// restart on the same trail, eight call_interrupted events name them,
// audit verify passes, and audit report lists the eight; a second restart
// names none again.
func TestSIGKILL_CallsAtTheVendorAreNamedAfterARestart(t *testing.T) {
	hunt, seen := isolationVendor(t, 30*time.Second)
	s := newBinSetup(t)
	s.writeHuntress(hunt.URL, "")
	s.start()

	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); s.post("/huntress/v1/agents/7/isolation", fmt.Sprintf("isolate-%d", i)) }()
	}
	var atVendor []string
	for len(atVendor) < n {
		select {
		case id := <-seen:
			atVendor = append(atVendor, id)
		case <-time.After(20 * time.Second):
			t.Fatalf("the vendor received %d of %d calls", len(atVendor), n)
		}
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = s.wait()
	wg.Wait()

	begun := map[string]uint64{}
	for _, l := range readTrail(t, s.audit) {
		if l.Type == "begin" {
			begun[l.RequestID] = l.Seq
		}
		if l.Type == "call" && strings.HasPrefix(l.RequestID, "isolate-") {
			t.Errorf("an end record for %s, which never ended", l.RequestID)
		}
	}
	for _, id := range atVendor {
		if begun[id] == 0 {
			t.Errorf("the vendor saw %s, and the trail has no begin line for it", id)
		}
	}

	s.start() // the same configuration, the same trail
	named := map[uint64]string{}
	for _, l := range readTrail(t, s.audit) {
		if l.Event != nil && l.Event.Name == "call_interrupted" {
			e := l.Event
			if e.Upstream != "huntress" || e.Method != "POST" || e.Path != "/v1/agents/7/isolation" || e.Caller != "soar" || e.Begun == "" {
				t.Errorf("call_interrupted %+v", *e)
			}
			named[e.BeginSeq] = e.RequestID
		}
	}
	if len(named) != n {
		t.Errorf("%d call_interrupted events; want %d", len(named), n)
	}
	for id, seq := range begun {
		if named[seq] != id {
			t.Errorf("begin %d (%s) is named %q", seq, id, named[seq])
		}
	}
	if !strings.Contains(s.stderr.String(), "call interrupted") {
		t.Errorf("no warning in the log:\n%s", s.stderr.String())
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.wait(); err != nil {
		t.Fatalf("keybroker ended with %v", err)
	}

	bin := proxyBinary(t)
	if out, err := exec.Command(bin, "audit", "verify", s.audit).CombinedOutput(); err != nil {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "audit", "report", s.audit, "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Interrupted []struct {
			RequestID string `json:"request_id"`
			State     string `json:"state"`
		} `json:"interrupted"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, c := range rep.Interrupted {
		if c.State == "interrupted" {
			listed = append(listed, c.RequestID)
		}
	}
	sort.Strings(listed)
	sort.Strings(atVendor)
	if strings.Join(listed, ",") != strings.Join(atVendor, ",") {
		t.Errorf("the report lists %v as interrupted; the vendor saw %v", listed, atVendor)
	}

	s.start() // a second restart names nothing again
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.wait()
	count := 0
	for _, l := range readTrail(t, s.audit) {
		if l.Event != nil && l.Event.Name == "call_interrupted" {
			count++
		}
	}
	if count != n {
		t.Errorf("after a second restart %d call_interrupted events; want still %d", count, n)
	}
}

// fill writes into dir until its filesystem is full, and returns the
// filler's path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	for _, n := range []int{4096, 256, 1} { // the last blocks too
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
	return path
}

// TestDiskFullAfterBegin_TheCallIsNamed: the disk fills while a call is
// at the vendor, so its end record cannot be written. Once there is room
// again the call is named in call_interrupted right after audit_recovered;
// when keybroker stops before that, the next start names it.
func TestDiskFullAfterBegin_TheCallIsNamed(t *testing.T) {
	auditDir, ok := smallFS(t, 8<<20)
	if !ok {
		t.Skip("needs a small tmpfs (root); internal/audit's TestWriter_DiskFullAfterBeginNamesTheCall covers the writer")
	}
	hunt, seen := isolationVendor(t, time.Second)
	s := newBinSetup(t)
	s.audit = filepath.Join(auditDir, "audit.log")
	s.writeHuntress(hunt.URL, "")
	s.start()

	// callWhileFull sends a POST, fills the disk once the vendor has it,
	// and waits for the answer. Its query makes its end record longer
	// than a page, so that the slack of the file's last page cannot take
	// it.
	callWhileFull := func(id string) string {
		done := make(chan int, 1)
		go func() { done <- s.post("/huntress/v1/agents/7/isolation?note="+strings.Repeat("x", 6000), id) }()
		select {
		case <-seen:
		case <-time.After(20 * time.Second):
			t.Fatalf("the vendor never received %s", id)
		}
		filler := fill(t, auditDir)
		if status := <-done; status == 0 {
			t.Fatalf("%s: no answer", id)
		}
		// The reply goes out before the record is written: wait until its
		// write has failed (the trail is unready) before the disk has room.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if code, _ := s.readyz(); code == http.StatusServiceUnavailable {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: its record was written on a full disk", id)
			}
		}
		return filler
	}
	interrupted := func() map[string]int {
		out := map[string]int{}
		for _, l := range readTrail(t, s.audit) {
			if l.Event != nil && l.Event.Name == "call_interrupted" {
				out[l.Event.RequestID]++
			}
		}
		return out
	}

	filler := callWhileFull("full-1")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	var status int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if status = s.get("/huntress/v1/account"); status == http.StatusOK {
			break
		}
	}
	if status != http.StatusOK {
		t.Fatalf("calls did not recover once the disk had room: %d", status)
	}
	lines := readTrail(t, s.audit)
	for i, l := range lines {
		if l.Event != nil && l.Event.Name == "call_interrupted" {
			if l.Event.RequestID != "full-1" || i == 0 || lines[i-1].Event == nil || lines[i-1].Event.Name != "audit_recovered" {
				t.Errorf("call_interrupted %+v, after %+v; want full-1 right after audit_recovered", *l.Event, lines[i-1])
			}
		}
	}
	if got := interrupted(); got["full-1"] != 1 {
		for _, l := range lines[max(0, len(lines)-8):] {
			t.Logf("%+v", l)
		}
		t.Fatalf("call_interrupted events %v; want full-1 once", got)
	}

	filler = callWhileFull("full-2")
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.wait()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.start()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.wait()
	if got := interrupted(); got["full-1"] != 1 || got["full-2"] != 1 || len(got) != 2 {
		t.Errorf("call_interrupted events %v; want full-1 and full-2 once each", got)
	}
	if out, err := exec.Command(proxyBinary(t), "audit", "verify", s.audit).CombinedOutput(); err != nil {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
}
