package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keybroker/keybroker/internal/redistest"
)

// sharedLimit is a quota of requests per Per with the shares given.
func sharedLimit(requests int, per time.Duration, shares map[string]Share) qc {
	return qc{Quota: Quota{Requests: requests, Per: per, Shares: NewShares(shares)}, Call: Call{MaxWait: 5 * time.Second}}
}

func as(lim qc, caller string) qc {
	lim.Caller = caller
	return lim
}

// TestShares_ReserveIsNeverTakenAndNeverWaits: 10 slots, 2 of them the
// incident responder's. A bulk caller gets 8 and then waits; the
// responder's calls go at once, past the bulk caller's line; its third
// waits like anyone. A Remaining says what each could still take.
func TestShares_ReserveIsNeverTakenAndNeverWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 0)
		lim := sharedLimit(10, time.Minute, map[string]Share{"ir": {Reserve: 2}})
		lim.MaxWait = 0
		for i := range 8 {
			res, _, err := acquire(l, context.Background(), "k", as(lim, "bulk"))
			if err != nil {
				t.Fatalf("bulk call %d: %v", i+1, err)
			}
			if res.Reserved || res.Remaining != 8-i-1 {
				t.Errorf("bulk call %d: %+v", i+1, res)
			}
		}
		if _, _, err := acquire(l, context.Background(), "k", as(lim, "bulk")); err == nil {
			t.Fatal("bulk took a reserved slot")
		} else if ref, _ := IsRefused(err); ref.Share {
			t.Errorf("bulk has no max; refusal says share: %+v", ref)
		}
		for i := range 2 {
			res, _, err := acquire(l, context.Background(), "k", as(lim, "ir"))
			if err != nil || !res.Reserved || res.Remaining != 1-i {
				t.Fatalf("ir call %d: %+v %v", i+1, res, err)
			}
		}
		if _, _, err := acquire(l, context.Background(), "k", as(lim, "ir")); err == nil {
			t.Fatal("a third ir call went past a full window")
		}
		usage := map[string]PartyUsage{}
		for _, u := range l.ShareUsage("k") {
			usage[u.Caller] = u
		}
		if usage["ir"].Reserved != 2 || usage["ir"].Shared != 0 || usage["bulk"].Shared != 8 {
			t.Errorf("share usage %v", usage)
		}
	})
}

// TestShares_ReservedCallGoesPastTheLine: with bulk calls waiting for the
// shared slots, a call that can use its caller's reserve is admitted at
// once; an Ahead call (a probe) takes a freed shared slot before the bulk
// line, but never the reserve.
func TestShares_ReservedCallGoesPastTheLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, time.Millisecond)
		lim := sharedLimit(3, 50*time.Millisecond, map[string]Share{"ir": {Reserve: 1}})
		var held []Ticket
		for range 2 {
			_, tk, err := acquire(l, context.Background(), "k", as(lim, "bulk"))
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, tk)
		}
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, tk, err := acquire(l, context.Background(), "k", as(lim, "bulk"))
				if err == nil {
					tk.Release(true)
				}
			}()
		}
		synctest.Wait()
		if n := queued(l, "k"); n != 3 {
			t.Fatalf("%d calls queued, want 3", n)
		}
		probe := lim
		probe.Ahead, probe.MaxWait = true, 0
		if _, _, err := acquire(l, context.Background(), "k", probe); err == nil {
			t.Fatal("an Ahead call took the responder's idle reserve")
		}
		start := time.Now()
		res, tk, err := acquire(l, context.Background(), "k", as(lim, "ir"))
		if err != nil || !res.Reserved || time.Since(start) != 0 {
			t.Fatalf("reserved call behind the line: %+v %v after %v", res, err, time.Since(start))
		}
		tk.Release(true)
		for _, tk := range held {
			tk.Release(true)
		}
		wg.Wait()
	})
}

// TestShares_MaxCaps: a caller never holds more than its max, even with
// the rest of the quota idle; its refusal says it was its own cap.
func TestShares_MaxCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 0)
		lim := sharedLimit(60, time.Minute, map[string]Share{"bulk": {Max: 30}})
		lim.MaxWait = 0
		for range 30 {
			if _, _, err := acquire(l, context.Background(), "k", as(lim, "bulk")); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err := acquire(l, context.Background(), "k", as(lim, "bulk"))
		if ref, ok := IsRefused(err); !ok || !ref.Share {
			t.Fatalf("31st bulk call: %v, want a refusal by its share", err)
		}
		if res, _, err := acquire(l, context.Background(), "k", as(lim, "soar")); err != nil || res.Remaining != 29 {
			t.Fatalf("another caller: %+v %v", res, err)
		}
	})
}

// TestShares_WeightedFairQueuing: two callers with weights 3 and 1, both
// always waiting, get freed slots 3:1; each caller's calls in order.
func TestShares_WeightedFairQueuing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, time.Millisecond)
		lim := sharedLimit(1, time.Hour, map[string]Share{"a": {Weight: 3}, "b": {Weight: 1}})
		lim.MaxWait = time.Minute
		_, first, err := acquire(l, context.Background(), "k", as(lim, "x"))
		if err != nil {
			t.Fatal(err)
		}
		type admission struct {
			caller string
			n      int
			tk     Ticket
		}
		got := make(chan admission, 200)
		var wg sync.WaitGroup
		for _, caller := range []string{"a", "b"} {
			for i := range 60 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, tk, err := acquire(l, context.Background(), "k", as(lim, caller))
					if err != nil {
						t.Errorf("%s %d: %v", caller, i, err)
						return
					}
					got <- admission{caller, i, tk}
				}()
			}
		}
		synctest.Wait()
		if n := queued(l, "k"); n != 120 {
			t.Fatalf("%d calls queued, want 120", n)
		}
		first.Release(false)
		counts := map[string]int{}
		for range 80 {
			ad := <-got
			counts[ad.caller]++
			ad.tk.Release(false) // the next slot frees at once
		}
		t.Logf("80 freed slots: %v", counts)
		// 80 slots at 3:1 are 60 and 20; a's 60 calls are then all served.
		if counts["a"] < 57 || counts["a"] > 60 || counts["b"] < 20 || counts["b"] > 23 {
			t.Errorf("admissions %v, want about 60:20", counts)
		}
		for range 40 {
			(<-got).tk.Release(false)
		}
		wg.Wait()
	})
}

// TestShares_HoldLetsReservedCallsThrough: the hold after a hand-off
// from Redis holds shared slots only.
func TestShares_HoldLetsReservedCallsThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 0)
		lim := sharedLimit(10, time.Second, map[string]Share{"ir": {Reserve: 1}})
		lim.MaxWait = 0
		l.Hold("k", time.Now().Add(time.Second))
		if _, _, err := acquire(l, context.Background(), "k", as(lim, "bulk")); err == nil {
			t.Fatal("a shared call went through the hold")
		}
		if res, _, err := acquire(l, context.Background(), "k", as(lim, "ir")); err != nil || !res.Reserved {
			t.Fatalf("a reserved call was held: %v", err)
		}
		time.Sleep(time.Second)
		if _, _, err := acquire(l, context.Background(), "k", as(lim, "bulk")); err != nil {
			t.Fatalf("after the hold: %v", err)
		}
	})
}

// TestShares_Scaled: a replica's part when Redis is away.
func TestShares_Scaled(t *testing.T) {
	s := NewShares(map[string]Share{"ir": {Reserve: 5, Weight: 3}, "bulk": {Max: 30}})
	got := s.Scaled(3, 20)
	if ir, bulk := got.Of("ir"), got.Of("bulk"); ir.Reserve != 2 || ir.Weight != 3 || bulk.Max != 10 {
		t.Errorf("scaled %+v %+v", ir, bulk)
	}
	// Reserves that would not fit in the replica's part shrink together.
	tight := NewShares(map[string]Share{"a": {Reserve: 30}, "b": {Reserve: 30}}).Scaled(3, 20)
	if a, b := tight.Of("a"), tight.Of("b"); a.Reserve+b.Reserve > 20 {
		t.Errorf("scaled reserves %d + %d over the replica's 20", a.Reserve, b.Reserve)
	}
	if fmt.Sprint(NewShares(nil).Scaled(1, 60).Reserved()) != "0" {
		t.Error("no shares")
	}
}

// BenchmarkWindowDecisionShares is BenchmarkWindowDecision under shares,
// for a caller with a reserve and one without.
func BenchmarkWindowDecisionShares(b *testing.B) {
	for _, caller := range []string{"ir", "bulk"} {
		b.Run(caller, func(b *testing.B) {
			l := NewWindow(nil, 0)
			lim := sharedLimit(60, time.Minute, map[string]Share{"ir": {Reserve: 5, Weight: 3}, "bulk": {Max: 30}})
			lim.Caller = caller
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, tk, err := acquire(l, ctx, "upstream:huntress", lim)
				if err != nil {
					b.Fatal(err)
				}
				tk.Release(false)
			}
		})
	}
}

// TestShares_RedisFallbackKeepsTheReserve: with Redis gone, a replica
// keeps its part of each reserve (ceil(5/3) = 2), counting the reserved
// calls it already sent through Redis in this window; the hand-off hold
// stops shared calls, not reserved ones.
func TestShares_RedisFallbackKeepsTheReserve(t *testing.T) {
	rs := redistest.Start(t)
	r := NewRedis(RedisOptions{Address: rs.Addr, Replicas: 3})
	defer r.Close()
	lim := sharedLimit(60, 2*time.Second, map[string]Share{"ir": {Reserve: 5}})
	lim.MaxWait = 0
	ctx := context.Background()
	for i := range 3 {
		res, tk, err := acquire(r, ctx, "k", as(lim, "ir"))
		if err != nil || !res.Reserved {
			t.Fatalf("reserved call %d through redis: %+v %v", i, res, err)
		}
		tk.Release(true)
	}
	rs.Stop()
	// This replica sent 3 reserved calls in the window: more than its
	// part of 2, so none goes until they leave it.
	if _, _, err := acquire(r, ctx, "k", as(lim, "ir")); err == nil {
		t.Fatal("a reserved call went beyond the replica's part of the reserve")
	}
	if !r.InFallback() {
		t.Fatal("not in the fallback")
	}
	if _, _, err := acquire(r, ctx, "k", as(lim, "bulk")); err == nil {
		t.Fatal("a shared call went through the hand-off hold")
	}
	time.Sleep(2*time.Second + 100*time.Millisecond)
	res, _, err := acquire(r, ctx, "k", as(lim, "ir"))
	if err != nil || !res.Reserved {
		t.Fatalf("after the window, within its part: %+v %v", res, err)
	}
	if _, _, err := acquire(r, ctx, "k", as(lim, "bulk")); err == nil {
		t.Fatal("a shared call went through the hand-off hold (a window and a second)")
	}
}

// TestShares_Reload: a new split (a reload) applies to the slots held and
// the calls to come: a caller whose reserve grows can use it at once.
func TestShares_Reload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 0)
		lim := sharedLimit(4, time.Minute, map[string]Share{"ir": {Reserve: 1}})
		lim.MaxWait = 0
		for range 3 {
			if _, _, err := acquire(l, context.Background(), "k", as(lim, "bulk")); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := acquire(l, context.Background(), "k", as(lim, "ir")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := acquire(l, context.Background(), "k", as(lim, "ir")); err == nil {
			t.Fatal("ir went past its reserve of 1 on a full window")
		}
		// Reloaded: bulk capped at 2, ir's reserve 2. The window is full
		// (4 held), so ir's second reserved slot waits for a slot to free; bulk
		// holds 3, over its new max, so it gets nothing until it is under.
		grown := sharedLimit(4, time.Minute, map[string]Share{"ir": {Reserve: 2}, "bulk": {Max: 2}})
		grown.MaxWait = 0
		_, _, err := acquire(l, context.Background(), "k", as(grown, "bulk"))
		if ref, ok := IsRefused(err); !ok || !ref.Share {
			t.Errorf("bulk over its reloaded max: %v, want a share refusal", err)
		}
		if _, _, err := acquire(l, context.Background(), "k", as(grown, "ir")); err == nil {
			t.Error("ir's grown reserve took a fifth slot of a 4-slot window")
		}
		if in, _ := l.Usage("k"); in != 4 {
			t.Errorf("%d slots held, want the quota's 4", in)
		}
	})
}

// TestShares_RedisMaxRefusalSaysShare: across replicas, a caller at its
// max waits its max_wait and is refused by its share, not the upstream.
func TestShares_RedisMaxRefusalSaysShare(t *testing.T) {
	rs := redistest.Start(t)
	a, b := NewRedis(RedisOptions{Address: rs.Addr, Replicas: 2}), NewRedis(RedisOptions{Address: rs.Addr, Replicas: 2})
	defer a.Close()
	defer b.Close()
	lim := sharedLimit(10, time.Minute, map[string]Share{"bulk": {Max: 2}})
	lim.MaxWait = 300 * time.Millisecond
	ctx := context.Background()
	for _, r := range []*Redis{a, b} {
		if _, _, err := acquire(r, ctx, "k", as(lim, "bulk")); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := acquire(a, ctx, "k", as(lim, "bulk"))
	if ref, ok := IsRefused(err); !ok || !ref.Share {
		t.Fatalf("bulk's third slot across two replicas: %v, want a refusal by its share", err)
	}
	if res, _, err := acquire(b, ctx, "k", as(lim, "soar")); err != nil || res.Remaining != 7 {
		t.Errorf("another caller: %+v %v", res, err)
	}
}
