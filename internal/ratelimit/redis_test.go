package ratelimit

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/redistest"
)

// TestRedis_ReplicasShareOneWindow: three limiters (three replicas) on one
// Redis, each with many impatient callers, for three windows: every window
// of length Per sees at most Requests admitted calls in total, and close to
// all of the quota is used.
func TestRedis_ReplicasShareOneWindow(t *testing.T) {
	rs := redistest.Start(t)
	lim := Limit{Requests: 20, Per: 2 * time.Second, Burst: 1, MaxWait: 3 * time.Second}
	var mu sync.Mutex
	var sent []time.Time
	var wg sync.WaitGroup
	stop := time.Now().Add(6 * time.Second)
	for range 3 {
		r := NewRedis(RedisOptions{Address: rs.Addr, Replicas: 3})
		defer r.Close()
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					ctx, cancel := context.WithDeadline(context.Background(), stop)
					_, err := r.Wait(ctx, "upstream:huntress", lim)
					cancel()
					if err == nil && time.Now().Before(stop) {
						mu.Lock()
						sent = append(sent, time.Now())
						mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	sort.Slice(sent, func(i, j int) bool { return sent[i].Before(sent[j]) })
	worst := 0
	for i := range sent {
		n := 0
		for j := i; j < len(sent) && sent[j].Sub(sent[i]) < lim.Per; j++ {
			n++
		}
		worst = max(worst, n)
	}
	// 6 s is three windows: at most 60; burst 1 gives 1 + 19 per window.
	// Steady state uses (requests-1)/requests of the quota: 95% here.
	if worst > lim.Requests || len(sent) < 54 {
		t.Errorf("%d calls in 6s, worst window %d: want <= %d per window and >= 54 (90%%) in all", len(sent), worst, lim.Requests)
	}
	t.Logf("3 replicas: %d calls in 3 windows (quota 60), worst window %d", len(sent), worst)
}

func TestRedis_PauseIsShared(t *testing.T) {
	rs := redistest.Start(t)
	a, b := NewRedis(RedisOptions{Address: rs.Addr}), NewRedis(RedisOptions{Address: rs.Addr})
	defer a.Close()
	defer b.Close()
	lim := Limit{MaxWait: time.Second}
	a.Pause("upstream:x", time.Now().Add(30*time.Second))
	_, err := b.Wait(context.Background(), "upstream:x", lim)
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
	lim := Limit{Requests: 1000, Per: time.Second, Burst: 100, MaxWait: time.Second}
	ctx := context.Background()
	if _, err := r.Wait(ctx, "k", lim); err != nil || r.InFallback() {
		t.Fatalf("with redis: %v", err)
	}
	rs.Stop()
	var failed atomic.Int64
	for range 50 {
		if _, err := r.Wait(ctx, "k", lim); err != nil {
			failed.Add(1)
		}
	}
	if failed.Load() != 0 || !r.InFallback() {
		t.Fatalf("without redis: %d failures, fallback %v", failed.Load(), r.InFallback())
	}
	if got := r.share(lim); got.Requests != 500 || got.Burst != 100 {
		t.Errorf("local share %+v, want half the quota", got)
	}
	rs.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for r.InFallback() && time.Now().Before(deadline) {
		_, _ = r.Wait(ctx, "k", lim)
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if r.InFallback() || len(events) != 2 || !events[0] || events[1] {
		t.Errorf("fallback %v, events %v: want fallback then recovery", r.InFallback(), events)
	}
}

func BenchmarkRedisDecision(b *testing.B) {
	rs := redistest.Start(b)
	r := NewRedis(RedisOptions{Address: rs.Addr})
	defer r.Close()
	lim := Limit{Requests: 1 << 30, Per: time.Second, Burst: 1 << 20}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Wait(ctx, "upstream:huntress", lim); err != nil {
			b.Fatal(err)
		}
	}
}
