package proxy_test

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/redistest"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// The Huntress shape, shrunk tenfold: 60 calls in any 6 s (Huntress: any
// 60 s), the fake vendor counting each call 0-20 ms after it arrives.
const (
	shareWindow = 6 * time.Second
	shareQuota  = 60
)

// shareRun is one run of callers against one Huntress quota: soar is the
// incident responder (one worker, a call every irEvery), siem the bulk
// collector (bulk workers hammering), each through keybroker with the
// shares in sharesYAML; on replicas keybrokers sharing one Redis when
// replicas > 1 (Redis killed at killAt, when set).
type shareRun struct {
	sharesYAML string
	burst      int // 0: the preset's (all 60 at once)
	bulk       int
	irEvery    time.Duration
	ir2        bool // a second bulk-like caller (soar hammering too), for weights
	run        time.Duration
	replicas   int
	killAt     time.Duration
}

type shareResult struct {
	start         time.Time
	accepted      map[string][]time.Time // vendor arrivals by caller, accepted
	failed        map[string]int         // calls the caller saw fail, by caller
	failures      []string
	irWaits       []float64 // soar's ratelimit_wait_ms (reserved calls' admission)
	vendorMax     int
	vendor429     int
	maxHeldBySiem int
	fallback      []bool // each replica's limiter in its local fallback at the end
	irOutcomes    []string
}

func (s shareRun) do(t *testing.T) shareResult {
	t.Helper()
	fake := vendortest.NewHuntress(huntressKey, huntressSecret, vendortest.HuntressOptions{
		Limit: shareQuota, Window: shareWindow, CountJitter: 20 * time.Millisecond})
	t.Cleanup(fake.Close)
	burst := ""
	if s.burst > 0 {
		burst = fmt.Sprintf("      burst: %d\n", s.burst)
	}
	yaml := fmt.Sprintf("    rate_limit:\n      requests: %d\n      per: %s\n      max_wait: 20s\n%s      shares:\n%s",
		shareQuota, shareWindow, burst, s.sharesYAML)
	var rs *redistest.Server
	if s.replicas > 1 {
		rs = redistest.Start(t)
	}
	var hs []*harness
	for range max(1, s.replicas) {
		o := harnessOpts{huntressYAML: yaml, shareHuntress: fake,
			callersYAML: fmt.Sprintf(shareCallers, callers.HashKey(soarKey), callers.HashKey(siemKey))}
		if rs != nil {
			rl := ratelimit.NewRedis(ratelimit.RedisOptions{Address: rs.Addr, Replicas: s.replicas})
			t.Cleanup(func() { rl.Close() })
			o.upstreamLimiter = rl
		}
		h := newHarness(t, o)
		h.routesLimiter = o.upstreamLimiter
		hs = append(hs, h)
	}
	res := shareResult{start: time.Now(), accepted: map[string][]time.Time{}, failed: map[string]int{}}
	var mu sync.Mutex
	stop := res.start.Add(s.run)
	var seq atomic.Int64
	call := func(h *harness, caller, key string) {
		id := fmt.Sprintf("%s-%d", caller, seq.Add(1))
		req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/agents?limit=1", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
		req.Header.Set("X-Request-Id", id)
		resp, err := http.DefaultClient.Do(req)
		ok := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			// Read to the end, as a client does: closing early cuts the
			// connection, and the audit records the call as cancelled.
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if !ok {
			mu.Lock()
			res.failed[caller]++
			if err != nil {
				res.failures = append(res.failures, caller+": "+err.Error())
			} else {
				res.failures = append(res.failures, fmt.Sprintf("%s: %d %s", caller, resp.StatusCode, resp.Header.Get("Keybroker-Error")))
			}
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	worker := func(h *harness, caller, key string, every time.Duration) {
		defer wg.Done()
		for time.Now().Before(stop) {
			next := time.Now().Add(every)
			call(h, caller, key)
			if every > 0 {
				time.Sleep(time.Until(next))
			}
		}
	}
	for i := range s.bulk {
		wg.Add(1)
		go worker(hs[i%len(hs)], "siem", siemKey, 0)
		if s.ir2 {
			wg.Add(1)
			go worker(hs[(i+1)%len(hs)], "soar", soarKey, 0)
		}
	}
	if s.irEvery > 0 {
		wg.Add(1)
		go worker(hs[0], "soar", soarKey, s.irEvery)
	}
	if s.killAt > 0 {
		time.Sleep(s.killAt)
		rs.Stop()
	}
	wg.Wait()
	for _, h := range hs {
		if rl, ok := h.routesLimiter.(*ratelimit.Redis); ok {
			res.fallback = append(res.fallback, rl.InFallback())
		}
	}

	for _, r := range fake.Requests() {
		caller, _, _ := strings.Cut(r.Header.Get("X-Request-Id"), "-")
		switch r.Status {
		case http.StatusOK:
			res.accepted[caller] = append(res.accepted[caller], r.At)
		case http.StatusTooManyRequests:
			res.vendor429++
		}
	}
	res.vendorMax = fake.MaxInWindow()
	res.maxHeldBySiem = maxInWindow(res.accepted["siem"], shareWindow)
	for _, rec := range hs[0].records() {
		if rec["caller"] == "soar" {
			res.irOutcomes = append(res.irOutcomes, fmt.Sprint(rec["outcome"], " ", rec["status"], " ", rec["error"]))
		}
		if rec["caller"] == "soar" && rec["outcome"] == "forwarded" {
			w, _ := rec["ratelimit_wait_ms"].(float64)
			res.irWaits = append(res.irWaits, w)
		}
	}
	return res
}

const shareCallers = `
callers:
  - name: soar
    key_sha256: %s
  - name: siem
    key_sha256: %s
`

// maxInWindow is the most times in any window of length w.
func maxInWindow(ts []time.Time, w time.Duration) int {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// between counts the times in [from, to).
func between(ts []time.Time, from, to time.Time) int {
	n := 0
	for _, t := range ts {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// checkVendor: never over the quota, never a vendor 429.
func (r shareResult) checkVendor(t *testing.T) {
	t.Helper()
	if r.vendorMax > shareQuota || r.vendor429 != 0 {
		t.Errorf("vendor: %d calls in its worst window (quota %d), %d 429s", r.vendorMax, shareQuota, r.vendor429)
	}
}

// starvation is the Huntress shape: a bulk caller with 8 workers, an
// incident responder with reserve 5 calling every 2 s (3 calls per
// window, inside its reserve), for 24 s (Huntress: 4 minutes).
func starvation(replicas int) shareRun {
	return shareRun{sharesYAML: "        soar: {reserve: 5, weight: 3}\n", bulk: 8, irEvery: 2 * time.Second,
		run: 4 * shareWindow, replicas: replicas}
}

func (r shareResult) checkStarvation(t *testing.T, run shareRun) {
	t.Helper()
	r.checkVendor(t)
	if r.failed["soar"] != 0 || r.failed["siem"] != 0 {
		t.Errorf("failed calls %v: %v", r.failed, first(r.failures, 5))
	}
	slowest := 0.0
	for _, w := range r.irWaits {
		slowest = math.Max(slowest, w)
	}
	if len(r.irWaits) < int(run.run/run.irEvery)-1 || slowest > 100 {
		t.Errorf("incident calls: %d, slowest admission %.1f ms (want every one within 100 ms); records %q", len(r.irWaits), slowest, r.irOutcomes)
	}
	// While both are busy the bulk caller gets the shared part of every
	// window (60 less the reserve of 5): the quota less the idle reserve.
	windows := int(run.run / shareWindow)
	bulk := between(r.accepted["siem"], r.start, r.start.Add(time.Duration(windows)*shareWindow))
	want := 0.95 * float64(windows*(shareQuota-5))
	t.Logf("%d replicas: bulk %d calls in %d windows (shared part %d each), incident %d calls, slowest admission %.1f ms; vendor's worst window %d",
		max(1, run.replicas), bulk, windows, shareQuota-5, len(r.accepted["soar"]), slowest, r.vendorMax)
	if float64(bulk) < want {
		t.Errorf("bulk got %d calls, want at least %.0f (95%% of the shared part)", bulk, want)
	}
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// TestShares_Starvation: the incident responder's reserve keeps it from
// waiting behind the bulk collector; the collector gets the rest, the
// vendor never more than its quota.
func TestShares_Starvation(t *testing.T) {
	if testing.Short() {
		t.Skip("24 s")
	}
	t.Parallel()
	run := starvation(1)
	run.do(t).checkStarvation(t, run)
}

// TestShares_Cap: the bulk collector with max 30 never holds more than
// 30 slots of any window, though the rest stays idle.
func TestShares_Cap(t *testing.T) {
	if testing.Short() {
		t.Skip("18 s")
	}
	t.Parallel()
	run := shareRun{sharesYAML: "        soar: {reserve: 5}\n        siem: {max: 30}\n", bulk: 8, irEvery: 2 * time.Second,
		run: 3 * shareWindow}
	r := run.do(t)
	r.checkVendor(t)
	if r.maxHeldBySiem > 30 || r.maxHeldBySiem < 28 {
		t.Errorf("bulk held %d slots of its worst window, want 30 at most (and about 30)", r.maxHeldBySiem)
	}
	if r.failed["soar"] != 0 {
		t.Errorf("incident calls failed: %v", first(r.failures, 5))
	}
}

// TestShares_Weights: two callers always waiting, weights 3 and 1, share a
// smoothed quota (one slot each 100 ms): the freed slots go 3:1.
func TestShares_Weights(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s")
	}
	t.Parallel()
	run := shareRun{sharesYAML: "        soar: {weight: 3}\n        siem: {weight: 1}\n", burst: 1, bulk: 8, ir2: true,
		run: 5 * shareWindow}
	run.do(t).checkWeights(t, "local", run, 0.1)
}

func (r shareResult) checkWeights(t *testing.T, what string, run shareRun, tolerance float64) {
	t.Helper()
	r.checkVendor(t)
	// After the first window (the smoothing bucket's burst) both wait,
	// until the workers stop (the last calls drain the line unfairly).
	from, to := r.start.Add(shareWindow), r.start.Add(run.run-time.Second)
	a, b := between(r.accepted["soar"], from, to), between(r.accepted["siem"], from, to)
	ratio := float64(a) / math.Max(float64(b), 1)
	t.Logf("%s: weights 3:1 got %d:%d = %.2f", what, a, b, ratio)
	if math.Abs(ratio-3)/3 > tolerance || a+b < 100 {
		t.Errorf("%s: freed slots went %d:%d (%.2f), want 3:1 ±%.0f%%", what, a, b, ratio, tolerance*100)
	}
}

// TestShares_Redis: the three runs across 3 replicas on one Redis, then
// Redis killed in the middle of a starvation run: no reserve broken, the
// vendor never over.
func TestShares_Redis(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s")
	}
	t.Parallel()
	t.Run("starvation", func(t *testing.T) {
		t.Parallel()
		run := starvation(3)
		run.do(t).checkStarvation(t, run)
	})
	t.Run("cap", func(t *testing.T) {
		t.Parallel()
		run := shareRun{sharesYAML: "        soar: {reserve: 5}\n        siem: {max: 30}\n", bulk: 9, irEvery: 2 * time.Second,
			run: 3 * shareWindow, replicas: 3}
		r := run.do(t)
		r.checkVendor(t)
		if r.maxHeldBySiem > 30 || r.maxHeldBySiem < 28 {
			t.Errorf("bulk held %d slots of its worst window across 3 replicas, want 30 at most (and about 30)", r.maxHeldBySiem)
		}
	})
	t.Run("weights", func(t *testing.T) {
		t.Parallel()
		run := shareRun{sharesYAML: "        soar: {weight: 3}\n        siem: {weight: 1}\n", burst: 1, bulk: 9, ir2: true,
			run: 5 * shareWindow, replicas: 3}
		run.do(t).checkWeights(t, "3 replicas", run, 0.1)
	})
	t.Run("redis killed", func(t *testing.T) {
		t.Parallel()
		run := starvation(3)
		run.run, run.killAt = 5*shareWindow, 2*shareWindow
		r := run.do(t)
		r.checkVendor(t)
		if r.failed["soar"] != 0 {
			t.Errorf("incident calls failed across the fallback: %v", first(r.failures, 5))
		}
		slowest := 0.0
		for _, w := range r.irWaits {
			slowest = math.Max(slowest, w)
		}
		if len(r.fallback) != 3 || !r.fallback[0] || !r.fallback[1] || !r.fallback[2] {
			t.Errorf("replicas in the fallback at the end: %v, want all three", r.fallback)
		}
		t.Logf("incident waits (ms): %v", r.irWaits)
		t.Logf("redis killed after 2 windows: vendor's worst window %d, bulk %d calls, incident %d calls (slowest admission %.0f ms), bulk refused %d",
			r.vendorMax, len(r.accepted["siem"]), len(r.accepted["soar"]), slowest, r.failed["siem"])
	})
}

// TestShares_WhatTheCallerSees: under shares, replies carry the caller's
// own RateLimit-*; a 429 says whether the caller's max or the upstream
// refused it, in the message and the audit's ratelimited_by.
func TestShares_WhatTheCallerSees(t *testing.T) {
	h := newHarness(t, harnessOpts{huntressYAML: `    rate_limit:
      requests: 4
      per: 1m
      max_wait: 0s
      shares:
        soar: {reserve: 1}
        siem: {max: 2}
`})
	get := func(key string) (*http.Response, string) {
		return h.do("GET", "/huntress/v1/agents", nil, bearer(key))
	}
	for i, want := range []string{"1", "0"} {
		resp, body := get(siemKey)
		if resp.StatusCode != 200 || resp.Header.Get("RateLimit-Limit") != "2" || resp.Header.Get("RateLimit-Remaining") != want {
			t.Fatalf("siem call %d: %d %s, RateLimit-Limit %q Remaining %q", i+1, resp.StatusCode, body,
				resp.Header.Get("RateLimit-Limit"), resp.Header.Get("RateLimit-Remaining"))
		}
	}
	resp, body := get(siemKey)
	contractError(t, resp, body, 429, proxy.CodeRateLimited)
	if !strings.Contains(body, `caller \"siem\" holds its max of 2 slots`) || resp.Header.Get("RateLimit-Limit") != "2" || resp.Header.Get("RateLimit-Remaining") != "0" {
		t.Errorf("share 429: %s %v", body, resp.Header)
	}
	if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); rec["ratelimited_by"] != "share" {
		t.Errorf("audit ratelimited_by %v, want share", rec["ratelimited_by"])
	}
	// soar: its reserve, then the one shared slot left, then nothing.
	for i, want := range []string{"1", "0"} {
		resp, body := get(soarKey)
		if resp.StatusCode != 200 || resp.Header.Get("RateLimit-Limit") != "4" || resp.Header.Get("RateLimit-Remaining") != want {
			t.Fatalf("soar call %d: %d %s, RateLimit-Limit %q Remaining %q", i+1, resp.StatusCode, body,
				resp.Header.Get("RateLimit-Limit"), resp.Header.Get("RateLimit-Remaining"))
		}
	}
	resp, body = get(soarKey)
	contractError(t, resp, body, 429, proxy.CodeRateLimited)
	if !strings.Contains(body, "no slot free for this caller") {
		t.Errorf("upstream 429: %s", body)
	}
	if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); rec["ratelimited_by"] != "upstream" {
		t.Errorf("audit ratelimited_by %v, want upstream", rec["ratelimited_by"])
	}
	// Without shares, replies carry no RateLimit-* (the contract's 429s do).
	if resp, _ := h.do("GET", "/infocyte/Agents", nil, bearer(soarKey)); resp.Header.Get("RateLimit-Limit") != "" {
		t.Errorf("a reply of an upstream without shares carries RateLimit-Limit %q", resp.Header.Get("RateLimit-Limit"))
	}
}
