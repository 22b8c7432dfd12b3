package proxy_test

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/redistest"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// scaled is Huntress's sliding window scaled down: 20 per 2 s, the whole
// quota at once; the fake counts each call 0-40 ms after it was sent.
const scaledLimit = "    rate_limit: {requests: 20, per: 2s, max_wait: 3s}\n"

var scaledFake = vendortest.HuntressOptions{Limit: 20, Window: 2 * time.Second, CountJitter: 40 * time.Millisecond}

// saturate sends from n goroutines per harness until stop; it returns the
// statuses callers got.
func saturate(hs []*harness, n int, key string, d time.Duration) map[int]int {
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for _, h := range hs {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/account", nil)
					req.Header.Set("Proxy-Authorization", "Bearer "+key)
					resp, err := http.DefaultClient.Do(req)
					st := 0
					if err == nil {
						st = resp.StatusCode
						resp.Body.Close()
					}
					mu.Lock()
					got[st]++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return got
}

func checkVendorQuota(t *testing.T, hunt *vendortest.Huntress, windows int) {
	t.Helper()
	accepted := hunt.Count(http.StatusOK)
	if n := hunt.Count(http.StatusTooManyRequests); n != 0 {
		t.Errorf("the vendor answered 429 %d times", n)
	}
	if w := hunt.MaxInWindow(); w > 20 {
		t.Errorf("%d calls in one vendor window, over its limit of 20", w)
	}
	if quota := 20 * windows; accepted < quota*9/10 {
		t.Errorf("%d calls accepted of a quota of %d: under 90%%", accepted, quota)
	}
	if len(hunt.Requests()) != hunt.Count(http.StatusOK) {
		t.Errorf("the vendor answered something other than 200: %d of %d", len(hunt.Requests())-hunt.Count(http.StatusOK), len(hunt.Requests()))
	}
	t.Logf("vendor accepted %d (quota %d), 429s %d, worst window %d", accepted, 20*windows, hunt.Count(429), hunt.MaxInWindow())
}

func TestRateLimit_OneReplicaKeepsTheVendorUnderItsWindow(t *testing.T) {
	h := newHarness(t, harnessOpts{huntressYAML: scaledLimit, huntress: scaledFake})
	got := saturate([]*harness{h}, 8, soarKey, 6*time.Second)
	if got[500] != 0 || got[0] != 0 {
		t.Errorf("caller statuses %v", got)
	}
	checkVendorQuota(t, h.huntress, 3)
}

func TestRateLimit_ThreeReplicasShareOneRedis(t *testing.T) {
	rs := redistest.Start(t)
	first := newHarness(t, harnessOpts{huntressYAML: scaledLimit, huntress: scaledFake,
		upstreamLimiter: ratelimit.NewRedis(ratelimit.RedisOptions{Address: rs.Addr, Replicas: 3, Margin: 5 * time.Millisecond})})
	hs := []*harness{first}
	for range 2 {
		hs = append(hs, newHarness(t, harnessOpts{huntressYAML: scaledLimit, shareHuntress: first.huntress,
			upstreamLimiter: ratelimit.NewRedis(ratelimit.RedisOptions{Address: rs.Addr, Replicas: 3, Margin: 5 * time.Millisecond})}))
	}
	got := saturate(hs, 4, soarKey, 6*time.Second)
	if got[500] != 0 || got[0] != 0 {
		t.Errorf("caller statuses %v", got)
	}
	checkVendorQuota(t, first.huntress, 3)
}

// TestRateLimit_RedisKilledMidRun: three replicas on one Redis, Redis
// killed mid-run and brought back: callers never get a 5xx, the vendor
// never a call over its window (the hand-offs hold), and every replica
// uses Redis again.
func TestRateLimit_RedisKilledMidRun(t *testing.T) {
	rs := redistest.Start(t)
	var rls []*ratelimit.Redis
	var hs []*harness
	for i := range 3 {
		rl := ratelimit.NewRedis(ratelimit.RedisOptions{Address: rs.Addr, Replicas: 3, Margin: 5 * time.Millisecond})
		o := harnessOpts{huntressYAML: scaledLimit, huntress: scaledFake, upstreamLimiter: rl}
		if i > 0 {
			o.shareHuntress = hs[0].huntress
		}
		rls, hs = append(rls, rl), append(hs, newHarness(t, o))
	}
	h := hs[0]
	done := make(chan map[int]int)
	go func() { done <- saturate(hs, 3, soarKey, 9*time.Second) }()
	// Phases by condition: calls served through Redis; Redis stopped and
	// the fallback taken; calls served on the local share; Redis back.
	waitFor(t, "calls served through Redis", func() bool { return h.huntress.Count(200) >= 3 })
	rs.Stop()
	waitFor(t, "the local fallback", func() bool { return rls[0].InFallback() && rls[1].InFallback() && rls[2].InFallback() })
	served := h.huntress.Count(200)
	waitFor(t, "calls served while Redis is down", func() bool { return h.huntress.Count(200) >= served+6 })
	rs.Restart()
	got := <-done
	for st := range got {
		if st >= 500 || st == 0 {
			t.Errorf("callers got %d %d times", st, got[st])
		}
	}
	t.Logf("callers got %v; vendor accepted %d, 429s %d, worst window %d", got, h.huntress.Count(200), h.huntress.Count(429), h.huntress.MaxInWindow())
	rl := rls[0]
	if h.huntress.Count(429) != 0 || h.huntress.MaxInWindow() > 20 {
		t.Errorf("vendor 429s %d, worst window %d", h.huntress.Count(429), h.huntress.MaxInWindow())
	}
	deadline := time.Now().Add(5 * time.Second)
	for rl.InFallback() && time.Now().Before(deadline) {
		h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
		time.Sleep(100 * time.Millisecond)
	}
	if rl.InFallback() {
		t.Error("still in fallback after redis came back")
	}
}

// TestRateLimit_GreedyCallerDoesNotStarvePoliteOne: a greedy caller with a
// limit of its own cannot take the polite caller's share of the quota.
func TestRateLimit_GreedyCallerDoesNotStarvePoliteOne(t *testing.T) {
	h := newHarness(t, harnessOpts{huntressYAML: scaledLimit, huntress: scaledFake, callersYAML: fmt.Sprintf(`
callers:
  - name: greedy
    key_sha256: %s
    rate_limit: {requests: 12, per: 2s, burst: 1, max_wait: 0s}
  - name: polite
    key_sha256: %s
`, callers.HashKey(siemKey), callers.HashKey(soarKey))})
	var politeOK, politeAll atomic.Int64
	done := make(chan map[int]int)
	go func() { done <- saturate([]*harness{h}, 8, siemKey, 4*time.Second) }()
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		resp, _ := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
		politeAll.Add(1)
		if resp.StatusCode == 200 {
			politeOK.Add(1)
		}
	}
	greedy := <-done
	if politeOK.Load() < politeAll.Load()*9/10 {
		t.Errorf("polite caller: %d of %d calls succeeded", politeOK.Load(), politeAll.Load())
	}
	if greedy[429] == 0 {
		t.Errorf("the greedy caller was never limited: %v", greedy)
	}
	t.Logf("polite %d/%d ok; greedy %v", politeOK.Load(), politeAll.Load(), greedy)
	var byCaller int
	for _, r := range h.records() {
		if r["ratelimited_by"] == "caller" && r["caller"] == "greedy" && r["error"] != "" {
			byCaller++
		}
	}
	if byCaller == 0 {
		t.Error("audit never says the caller's own limit refused")
	}
}

func TestRateLimit_MaxWaitExceededGives429WithHeaders(t *testing.T) {
	h := newHarness(t, harnessOpts{huntressYAML: "    rate_limit: {requests: 2, per: 10s, burst: 1, max_wait: 0s}\n"})
	if resp, _ := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Fatalf("first call %d", resp.StatusCode)
	}
	resp, body := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
	contractError(t, resp, body, 429, "rate_limited")
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if ra < 1 || ra > 10 || resp.Header.Get("RateLimit-Limit") != "2" || resp.Header.Get("RateLimit-Remaining") != "0" || resp.Header.Get("RateLimit-Reset") == "" {
		t.Errorf("headers Retry-After %q RateLimit %q/%q/%q", resp.Header.Get("Retry-After"),
			resp.Header.Get("RateLimit-Limit"), resp.Header.Get("RateLimit-Remaining"), resp.Header.Get("RateLimit-Reset"))
	}
	rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
	if rec["ratelimited_by"] != "upstream" || rec["outcome"] != "refused" {
		t.Errorf("audit %v %v", rec["ratelimited_by"], rec["outcome"])
	}
	if n := h.huntress.Count(0); n != 1 {
		t.Errorf("vendor got %d calls", n)
	}
}

func TestRateLimit_Vendor429PausesTheUpstream(t *testing.T) {
	// The vendor's real quota is lower than configured: keybroker learns
	// from its 429 and stops sending for the preset's pause (a window).
	h := newHarness(t, harnessOpts{
		huntressYAML: "    rate_limit: {requests: 1000, per: 1s, burst: 10, max_wait: 1s}\n",
		huntress:     vendortest.HuntressOptions{Limit: 2, Window: time.Minute},
	})
	statuses := []int{}
	for range 5 {
		resp, _ := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
		statuses = append(statuses, resp.StatusCode)
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "60" {
			t.Errorf("429 Retry-After %q, want the preset's 60", resp.Header.Get("Retry-After"))
		}
	}
	if fmt.Sprint(statuses) != "[200 200 429 429 429]" {
		t.Errorf("statuses %v", statuses)
	}
	if n := h.huntress.Count(0); n != 3 {
		t.Errorf("vendor got %d calls; after its 429 it must get none", n)
	}
	recs := h.records()
	if last := recs[len(recs)-1]; last["error"] == "" || last["ratelimited_by"] != "upstream" {
		t.Errorf("paused call's record %v", last)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
	}
}
