package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
)

var gomaxprocsLine = regexp.MustCompile(`(?m)^go_sched_gomaxprocs_threads (\d+)$`)

// gomaxprocs is the binary's GOMAXPROCS as its /metrics says.
func (s *binSetup) gomaxprocs() int {
	s.t.Helper()
	m := gomaxprocsLine.FindStringSubmatch(s.metrics())
	if m == nil {
		s.t.Fatal("/metrics has no go_sched_gomaxprocs_threads")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// waitProcs waits up to 10 s for the binary's GOMAXPROCS to be want.
func (s *binSetup) waitProcs(want int) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if s.gomaxprocs() == want {
			return true
		}
	}
	return false
}

func procsSetup(t *testing.T, env ...string) *binSetup {
	hunt := vendortest.NewHuntress("hk_procs", "hs_PLANTED_procs_secret", vendortest.HuntressOptions{Limit: 1 << 30, Delay: time.Second})
	t.Cleanup(hunt.Close)
	s := newBinSetup(t)
	s.env = env
	mustWrite(t, filepath.Join(s.dir, "h.json"), `{"api_key":"hk_procs","api_secret":"hs_PLANTED_procs_secret"}`)
	s.write(fmt.Sprintf(`upstreams:
  - name: huntress
    preset: huntress
    url: %q
    credential: {file: {path: %q}}
`, hunt.URL, filepath.Join(s.dir, "h.json")))
	s.start()
	return s
}

// TestServe_ProcessorsFollowTheCalls: the binary runs on one processor
// while calls come one at a time, on the runtime's default the moment two
// overlap, and on one again a quiet second later (internal/procs).
func TestServe_ProcessorsFollowTheCalls(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: the runtime's default is one processor already")
	}
	s := procsSetup(t, "GOMAXPROCS=")
	if !s.waitProcs(1) {
		t.Fatalf("idle, GOMAXPROCS stayed %d; want 1", s.gomaxprocs())
	}
	if code := s.get("/huntress/v1/account"); code != 200 {
		t.Fatalf("a call on one processor: status %d, want 200", code)
	}
	if n := s.gomaxprocs(); n != 1 {
		t.Errorf("one call at a time brought GOMAXPROCS to %d; want 1", n)
	}

	// Two calls held at the vendor for a second, the second sent while the
	// first is in flight.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() { defer wg.Done(); codes[i] = s.get("/huntress/v1/account") }()
		time.Sleep(200 * time.Millisecond)
	}
	during := s.gomaxprocs()
	wg.Wait()
	if codes[0] != 200 || codes[1] != 200 {
		t.Fatalf("overlapping calls: statuses %v, want 200s", codes)
	}
	if during < 2 {
		t.Errorf("with two calls in flight GOMAXPROCS was %d; want the default (%d CPUs)", during, runtime.NumCPU())
	}
	if !s.waitProcs(1) {
		t.Errorf("a quiet spell after the overlap, GOMAXPROCS stayed %d; want 1", s.gomaxprocs())
	}
}

// TestServe_GOMAXPROCSSetByHandIsKept: an operator's GOMAXPROCS is theirs.
func TestServe_GOMAXPROCSSetByHandIsKept(t *testing.T) {
	s := procsSetup(t, "GOMAXPROCS=2")
	if code := s.get("/huntress/v1/account"); code != 200 {
		t.Fatalf("status %d, want 200", code)
	}
	time.Sleep(2 * time.Second) // two quiet spells
	if n := s.gomaxprocs(); n != 2 {
		t.Errorf("GOMAXPROCS=2 set by hand, the binary runs with %d", n)
	}
}
