package proxy_test

import (
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
)

// burstCalls sends n calls at once as soar and returns each one's status
// and when it was answered, in order of answer.
func burstCalls(h *harness, n int) ([]int, []time.Duration) {
	start := time.Now()
	type res struct {
		st int
		at time.Duration
	}
	out := make(chan res, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/account", nil)
			req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
			resp, err := http.DefaultClient.Do(req)
			st := 0
			if err == nil {
				st = resp.StatusCode
				resp.Body.Close()
			}
			out <- res{st, time.Since(start)}
		}()
	}
	wg.Wait()
	close(out)
	var rs []res
	for r := range out {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].at < rs[j].at })
	sts, ats := make([]int, len(rs)), make([]time.Duration, len(rs))
	for i, r := range rs {
		sts[i], ats[i] = r.st, r.at
	}
	return sts, ats
}

// TestQuota_WholeWindowAtOnce: under a quota of 20 per 4 s, against a
// vendor that counts each call 0-40 ms after it was sent, 40 calls at once:
// the first 20 are answered within a second, the next 20 wait for the
// window, and the vendor refuses none.
func TestQuota_WholeWindowAtOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{
		huntressYAML: "    rate_limit: {requests: 20, per: 4s, max_wait: 10s}\n",
		huntress:     vendortest.HuntressOptions{Limit: 20, Window: 4 * time.Second, CountJitter: 40 * time.Millisecond},
	})
	sts, ats := burstCalls(h, 40)
	for i, st := range sts {
		if st != 200 {
			t.Fatalf("call %d: status %d", i, st)
		}
	}
	if ats[19] > time.Second {
		t.Errorf("the 20th call took %s; the whole quota should go at once", ats[19])
	}
	if ats[20] < 4*time.Second {
		t.Errorf("the 21st call was answered after %s, inside the first window", ats[20])
	}
	if n := h.huntress.Count(http.StatusTooManyRequests); n != 0 {
		t.Errorf("the vendor answered 429 %d times", n)
	}
	t.Logf("20 calls answered within %s; the next 20 from %s to %s", ats[19].Round(time.Millisecond), ats[20].Round(time.Millisecond), ats[39].Round(time.Millisecond))
}

// TestQuota_HammerUsesTheWholeQuota: 8 workers for four windows against the
// jittery sliding-window vendor, with burst 1, 5 and the whole quota: the
// vendor never refuses, and at least 95% of its quota is used.
func TestQuota_HammerUsesTheWholeQuota(t *testing.T) {
	for _, burst := range []int{1, 5, 20} {
		t.Run("burst="+strconv.Itoa(burst), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{
				huntressYAML: "    rate_limit: {requests: 20, per: 2s, burst: " + strconv.Itoa(burst) + ", max_wait: 3s}\n",
				huntress:     vendortest.HuntressOptions{Limit: 20, Window: 2 * time.Second, CountJitter: 40 * time.Millisecond},
			})
			const run = 8 * time.Second
			got := saturate([]*harness{h}, 8, soarKey, run)
			if got[0] != 0 || got[500] != 0 || got[502] != 0 {
				t.Errorf("caller statuses %v", got)
			}
			// Calls the vendor accepted within the run, from its first.
			reqs := h.huntress.Requests()
			accepted := 0
			for _, r := range reqs {
				if r.Status == http.StatusOK && r.At.Sub(reqs[0].At) < run {
					accepted++
				}
			}
			quota := 20 * run.Seconds() / 2
			used := float64(accepted) / quota
			t.Logf("burst %d: vendor accepted %d in %s (quota %.0f: %.1f%%), 429s %d, worst window %d",
				burst, accepted, run, quota, 100*used, h.huntress.Count(429), h.huntress.MaxInWindow())
			if n := h.huntress.Count(http.StatusTooManyRequests); n != 0 {
				t.Errorf("the vendor answered 429 %d times", n)
			}
			if used < 0.95 {
				t.Errorf("%.1f%% of the quota used, want at least 95%%", 100*used)
			}
		})
	}
}

// TestQuota_HuntressPresetSixtyAtOnce: with the Huntress preset (60 per any
// 60 s), 60 calls at once all succeed, and the 61st is told to come back
// when the window lets it through (it would wait past max_wait).
func TestQuota_HuntressPresetSixtyAtOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{huntress: vendortest.HuntressOptions{CountJitter: 40 * time.Millisecond}})
	sts, ats := burstCalls(h, 60)
	for i, st := range sts {
		if st != 200 {
			t.Fatalf("call %d of 60: status %d", i+1, st)
		}
	}
	resp, body := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
	contractError(t, resp, body, 429, "rate_limited")
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if ra < 59 || ra > 61 || resp.Header.Get("RateLimit-Limit") != "60" || resp.Header.Get("RateLimit-Remaining") != "0" ||
		resp.Header.Get("RateLimit-Policy") != "60;w=60" {
		t.Errorf("61st: Retry-After %q, RateLimit %q/%q/%q", resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit-Limit"),
			resp.Header.Get("RateLimit-Remaining"), resp.Header.Get("RateLimit-Policy"))
	}
	if n := h.huntress.Count(0); n != 60 || h.huntress.Count(http.StatusTooManyRequests) != 0 {
		t.Errorf("the vendor got %d calls, %d refused", n, h.huntress.Count(http.StatusTooManyRequests))
	}
	t.Logf("60 calls at once answered within %s; the 61st: Retry-After %ds", ats[59].Round(time.Millisecond), ra)
}
