package ratelimit

import (
	"context"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/redistest"
)

// TestRedis_ReplicasShareOneWindow: three limiters (three replicas) on one
// Redis, each with many impatient callers, for three windows, against a
// vendor that counts each call on arrival, 0-40 ms after it was admitted,
// and answers at once: no window of Per ever counts more than Requests,
// and nearly all of the quota is used.
func TestRedis_ReplicasShareOneWindow(t *testing.T) {
	rs := redistest.Start(t)
	lim := qc{Quota: Quota{Requests: 20, Per: 2 * time.Second}, Call: Call{MaxWait: 3 * time.Second}}
	var mu sync.Mutex
	var arrived []time.Time
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(6 * time.Second)
	for range 3 {
		r := NewRedis(RedisOptions{Address: rs.Addr, Replicas: 3, Margin: 5 * time.Millisecond})
		defer r.Close()
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewSource(int64(w)))
				for time.Now().Before(stop) {
					ctx, cancel := context.WithDeadline(context.Background(), stop)
					_, tk, err := acquire(r, ctx, "upstream:huntress", lim)
					cancel()
					if err != nil {
						continue
					}
					time.Sleep(time.Duration(rng.Intn(40)) * time.Millisecond) // on the way
					if time.Now().Before(stop) {
						mu.Lock()
						arrived = append(arrived, time.Now())
						mu.Unlock()
					}
					tk.Release(true)
				}
			}()
		}
	}
	wg.Wait()
	worst := busiestWindow(arrived, lim.Per)
	// 6 s is three windows, the whole quota at once in each: 60, less
	// what the hold past each reply costs.
	if worst > lim.Requests || len(arrived) < 54 {
		t.Errorf("%d calls in 6s, worst window %d: want <= %d per window and >= 54 (90%%) in all", len(arrived), worst, lim.Requests)
	}
	t.Logf("3 replicas: %d calls in 3 windows (quota 60), worst vendor window %d", len(arrived), worst)
}

func TestRedis_PauseIsShared(t *testing.T) {
	rs := redistest.Start(t)
	a, b := NewRedis(RedisOptions{Address: rs.Addr}), NewRedis(RedisOptions{Address: rs.Addr})
	defer a.Close()
	defer b.Close()
	lim := qc{Call: Call{MaxWait: time.Second}}
	a.Pause("upstream:x", time.Now().Add(30*time.Second))
	_, _, err := acquire(b, context.Background(), "upstream:x", lim)
	if ref, ok := IsRefused(err); !ok || !ref.Paused || ref.RetryAfter < 29*time.Second {
		t.Fatalf("the other replica is not paused: %v", err)
	}
}

// TestRedis_FallsBackAndReturns: Redis killed mid-run: calls go on under the
// local share of the quota (never an error), and Redis is used again once it
// is back.
func TestRedis_FallsBackAndReturns(t *testing.T) {
	rs := redistest.Start(t)
	var events []bool
	var mu sync.Mutex
	r := NewRedis(RedisOptions{Address: rs.Addr, Replicas: 2, OnFallback: func(on bool, _ string) {
		mu.Lock()
		events = append(events, on)
		mu.Unlock()
	}})
	defer r.Close()
	// MaxWait covers the hand-off into the fallback: a window and the slack.
	lim := qc{Quota: Quota{Requests: 1000, Per: time.Second, Burst: 100}, Call: Call{MaxWait: 3 * time.Second}}
	ctx := context.Background()
	acquire := func() error {
		_, tk, err := acquire(r, ctx, "k", lim)
		tk.Release(true)
		return err
	}
	if err := acquire(); err != nil || r.InFallback() {
		t.Fatalf("with redis: %v", err)
	}
	rs.Stop()
	var failed atomic.Int64
	for range 50 {
		if err := acquire(); err != nil {
			failed.Add(1)
		}
	}
	if failed.Load() != 0 || !r.InFallback() {
		t.Fatalf("without redis: %d failures, fallback %v", failed.Load(), r.InFallback())
	}
	if got := r.localShare(lim.Quota); got.Requests != 500 || got.Burst != 100 {
		t.Errorf("local share %+v, want half the quota", got)
	}
	rs.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for r.InFallback() && time.Now().Before(deadline) {
		_ = acquire()
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if r.InFallback() || len(events) != 2 || !events[0] || events[1] {
		t.Errorf("fallback %v, events %v: want fallback then recovery", r.InFallback(), events)
	}
}

// BenchmarkRedisDecision is one admission decision: one round trip (the
// acquire script). The release, after the vendor's reply, is another.
func BenchmarkRedisDecision(b *testing.B) {
	rs := redistest.Start(b)
	r := NewRedis(RedisOptions{Address: rs.Addr})
	defer r.Close()
	lim := qc{Quota: Quota{Requests: 1 << 30, Per: time.Second}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := acquire(r, ctx, "upstream:huntress", lim); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisAcquireRelease is a whole call's limiter work: the
// decision and the release, two round trips.
func BenchmarkRedisAcquireRelease(b *testing.B) {
	rs := redistest.Start(b)
	r := NewRedis(RedisOptions{Address: rs.Addr})
	defer r.Close()
	lim := qc{Quota: Quota{Requests: 1 << 30, Per: time.Second}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, tk, err := acquire(r, ctx, "upstream:huntress", lim)
		if err != nil {
			b.Fatal(err)
		}
		tk.Release(true)
	}
}

// BenchmarkRedisDecisionShares is a whole call's limiter work under
// rate_limit.shares, beside the same without shares: the decision and
// the release (not sent, so the sets stay small), two round trips each.
func BenchmarkRedisDecisionShares(b *testing.B) {
	rs := redistest.Start(b)
	r := NewRedis(RedisOptions{Address: rs.Addr, Replicas: 3})
	defer r.Close()
	shares := NewShares(map[string]Share{"ir": {Reserve: 5, Weight: 3}, "bulk": {Max: 30}})
	for _, c := range []struct {
		name   string
		lim    qc
		caller string
	}{
		{"no shares", qc{Quota: Quota{Requests: 60, Per: time.Minute}, Call: Call{MaxWait: time.Second}}, ""},
		{"reserve", qc{Quota: Quota{Requests: 60, Per: time.Minute, Shares: shares}, Call: Call{MaxWait: time.Second}}, "ir"},
		{"shared", qc{Quota: Quota{Requests: 60, Per: time.Minute, Shares: shares}, Call: Call{MaxWait: time.Second}}, "bulk"},
	} {
		b.Run(c.name, func(b *testing.B) {
			lim := c.lim
			lim.Caller = c.caller
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, tk, err := acquire(r, ctx, "upstream:"+c.name, lim)
				if err != nil {
					b.Fatal(err)
				}
				tk.Release(false)
			}
		})
	}
}
