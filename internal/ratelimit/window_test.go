package ratelimit

import (
	"context"
	"fmt"
	"math/rand"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestWindow_WholeQuotaAtOnceThenExactlyWhenTheOldestLeaves: the Huntress
// quota, 60 per 60 s: 60 calls go at once; the 61st can go exactly when the
// oldest call's hold ends, Per plus the margin after its reply came back.
func TestWindow_WholeQuotaAtOnceThenExactlyWhenTheOldestLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 25*time.Millisecond)
		lim := qc{Quota: Quota{Requests: 60, Per: time.Minute}}
		var tickets []Ticket
		for i := 0; i < 60; i++ {
			_, tk, err := acquire(l, context.Background(), "h", lim)
			if err != nil {
				t.Fatalf("call %d refused: %v", i+1, err)
			}
			tickets = append(tickets, tk)
		}
		// All 60 in flight: the 61st cannot know when; it is told a window.
		_, _, err := acquire(l, context.Background(), "h", lim)
		if ref, ok := IsRefused(err); !ok || ref.RetryAfter != time.Minute {
			t.Fatalf("61st with every call in flight: %v", err)
		}
		time.Sleep(80 * time.Millisecond)
		tickets[0].Release(true) // its reply came back at t=80ms
		time.Sleep(20 * time.Millisecond)
		for i := 1; i < 60; i++ {
			tickets[i].Release(true) // the rest at t=100ms
		}
		_, _, err = acquire(l, context.Background(), "h", lim)
		want := 80*time.Millisecond + time.Minute + 25*time.Millisecond - 100*time.Millisecond
		if ref, ok := IsRefused(err); !ok || ref.RetryAfter != want || ref.Limit != 60 {
			t.Fatalf("61st: %v, want a retry after exactly %s", err, want)
		}
		time.Sleep(want - time.Nanosecond)
		if _, _, err := acquire(l, context.Background(), "h", lim); err == nil {
			t.Fatal("admitted a nanosecond early")
		}
		time.Sleep(time.Nanosecond)
		if _, _, err := acquire(l, context.Background(), "h", lim); err != nil {
			t.Fatalf("not admitted when the oldest left: %v", err)
		}
		if in, req := l.Usage("h"); in != 60 || req != 60 {
			t.Errorf("usage %d/%d", in, req)
		}
	})
}

// TestWindow_UnsentCallFreesItsSlot: a call admitted but never sent (no
// credential, say) gives its slot back at once.
func TestWindow_UnsentCallFreesItsSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 0)
		lim := qc{Quota: Quota{Requests: 1, Per: time.Hour}}
		_, tk, _ := acquire(l, context.Background(), "k", lim)
		tk.Release(false)
		tk.Release(true) // only the first release counts
		if _, _, err := acquire(l, context.Background(), "k", lim); err != nil {
			t.Fatalf("slot not freed: %v", err)
		}
	})
}

// TestWindow_BurstSmooths: burst 1 of 10 per second spaces calls 100 ms.
func TestWindow_BurstSmooths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 0)
		lim := qc{Quota: Quota{Requests: 10, Per: time.Second, Burst: 1}}
		if _, tk, err := acquire(l, context.Background(), "k", lim); err != nil {
			t.Fatal(err)
		} else {
			tk.Release(true)
		}
		_, _, err := acquire(l, context.Background(), "k", lim)
		if ref, ok := IsRefused(err); !ok || ref.RetryAfter < 99*time.Millisecond || ref.RetryAfter > 101*time.Millisecond {
			t.Fatalf("second call: %v, want a retry after 100ms", err)
		}
		time.Sleep(100 * time.Millisecond)
		if _, _, err := acquire(l, context.Background(), "k", lim); err != nil {
			t.Fatalf("after 100ms: %v", err)
		}
	})
}

// TestWindow_ACallThatMayNotWaitSharesTheSameBucket: a call that may not
// wait (keybroker's credential probe, MaxWait 0) goes through the same
// smoothing bucket as the callers' calls, and asking does not reset it.
func TestWindow_ACallThatMayNotWaitSharesTheSameBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 0)
		lim := qc{Quota: Quota{Requests: 10, Per: time.Second, Burst: 1}, Call: Call{MaxWait: time.Second}}
		_, tk, err := acquire(l, context.Background(), "k", lim)
		if err != nil {
			t.Fatal(err)
		}
		tk.Release(true)
		probe := lim
		probe.MaxWait = 0
		for i := range 3 {
			if _, _, err := acquire(l, context.Background(), "k", probe); err == nil {
				t.Fatalf("try %d: a call that may not wait was let through an empty bucket", i)
			}
		}
		time.Sleep(100 * time.Millisecond)
		if _, _, err := acquire(l, context.Background(), "k", probe); err != nil {
			t.Fatalf("after 100ms: %v", err)
		}
	})
}

// TestWindow_VendorNeverSeesMoreThanRequests simulates callers hammering a
// quota through network delay: each call arrives at the vendor somewhere
// between its admission and its reply. In no window of Per does the
// vendor count more than Requests, and the quota is nearly all used.
func TestWindow_VendorNeverSeesMoreThanRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, burst := range []int{1, 5, 20} {
			l := NewWindow(nil, 5*time.Millisecond)
			lim := qc{Quota: Quota{Requests: 20, Per: 2 * time.Second, Burst: burst}}
			rng := rand.New(rand.NewSource(int64(burst)))
			type inflight struct {
				t    Ticket
				done time.Time
			}
			var open []inflight
			var arrivals []time.Time
			start := time.Now()
			for step := 0; step < 20000; step++ { // 20 s in 1 ms steps
				now := time.Now()
				kept := open[:0]
				for _, f := range open {
					if !f.done.After(now) {
						f.t.Release(true)
					} else {
						kept = append(kept, f)
					}
				}
				open = kept
				for {
					_, tk, err := acquire(l, context.Background(), "v", lim)
					if err != nil {
						break
					}
					latency := time.Duration(rng.Intn(200)) * time.Millisecond
					arrivals = append(arrivals, now.Add(time.Duration(rng.Int63n(int64(latency)+1))))
					open = append(open, inflight{tk, now.Add(latency)})
				}
				time.Sleep(time.Millisecond)
			}
			worst := busiestWindow(arrivals, lim.Per)
			quota := float64(lim.Requests) * time.Now().Sub(start).Seconds() / lim.Per.Seconds()
			used := float64(len(arrivals)) / quota
			t.Logf("burst %d: %d calls in 20 s, worst vendor window %d/%d, %.0f%% of the quota", burst, len(arrivals), worst, lim.Requests, 100*used)
			if worst > lim.Requests {
				t.Errorf("burst %d: the vendor counted %d calls in one window", burst, worst)
			}
			if used < 0.9 {
				t.Errorf("burst %d: only %.0f%% of the quota used", burst, 100*used)
			}
		}
	})
}

// TestWindow_WaitersAreServedInArrivalOrder: callers waiting on a full
// window are admitted first come, first served, each as a slot frees.
func TestWindow_WaitersAreServedInArrivalOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, lim, first := oneSlotTaken()
		order := make(chan int, 5)
		var wg sync.WaitGroup
		for i := range 5 {
			arrive(t, l, &wg, order, i, lim)
		}
		first.Release(true)
		wg.Wait()
		close(order)
		want := 0
		for got := range order {
			if got != want {
				t.Fatalf("admitted %d, want %d (arrival order)", got, want)
			}
			want++
		}
	})
}

// TestWindow_AheadTakesTheNextSlotBeforeTheLine: a call marked Ahead
// (keybroker's credential probe) that arrives behind waiting callers gets
// the next free slot; they follow in arrival order. One that may not wait
// for it is refused, and the line is unchanged.
func TestWindow_AheadTakesTheNextSlotBeforeTheLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, lim, first := oneSlotTaken()
		order := make(chan int, 5)
		var wg sync.WaitGroup
		for i := range 3 {
			arrive(t, l, &wg, order, i, lim)
		}
		ahead := lim
		ahead.Ahead, ahead.MaxWait = true, 0
		if _, _, err := acquire(l, context.Background(), "k", ahead); err == nil {
			t.Fatal("an ahead call that may not wait was admitted on a full window")
		}
		ahead.MaxWait = 5 * time.Second
		arrive(t, l, &wg, order, 3, ahead)
		first.Release(true)
		wg.Wait()
		close(order)
		var got []int
		for i := range order {
			got = append(got, i)
		}
		if fmt.Sprint(got) != "[3 0 1 2]" {
			t.Fatalf("admitted in order %v, want the ahead call (3) first, then 0 1 2", got)
		}
	})
}

// oneSlotTaken is a window of one call per 20 ms whose slot is taken by
// first: the calls after it wait (up to 5 s) in line on key "k".
func oneSlotTaken() (l *Window, lim qc, first Ticket) {
	l = NewWindow(nil, time.Millisecond)
	lim = qc{Quota: Quota{Requests: 1, Per: 20 * time.Millisecond}, Call: Call{MaxWait: 5 * time.Second}}
	_, first, _ = acquire(l, context.Background(), "k", lim)
	return l, lim, first
}

// arrive starts call i on key "k" and returns once it is queued (the
// bubble is still). Admitted, the call sends i on order and releases its
// slot.
func arrive(t *testing.T, l *Window, wg *sync.WaitGroup, order chan<- int, i int, lim qc) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, tk, err := acquire(l, context.Background(), "k", lim)
		if err != nil {
			t.Errorf("call %d: %v", i, err)
			return
		}
		order <- i
		tk.Release(true)
	}()
	synctest.Wait()
}

// busiestWindow is the most calls at (sorted in place) in any window
// of per: what a vendor counting a sliding window would see.
func busiestWindow(at []time.Time, per time.Duration) int {
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	worst := 0
	for i := range at {
		n := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < per; j++ {
			n++
		}
		worst = max(worst, n)
	}
	return worst
}

func queued(l *Window, key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := l.keys[key]; w != nil {
		return w.waiting + len(w.aheadQ)
	}
	return 0
}

// TestWindow_CallerWhoLeavesGivesUpItsPlace: a waiter whose caller goes
// away leaves the queue; the next one is admitted in its place.
func TestWindow_CallerWhoLeavesGivesUpItsPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, time.Millisecond)
		lim := qc{Quota: Quota{Requests: 1, Per: 10 * time.Millisecond}, Call: Call{MaxWait: 5 * time.Second}}
		_, first, _ := acquire(l, context.Background(), "k", lim)
		ctx, cancel := context.WithCancel(context.Background())
		gone := make(chan error, 1)
		go func() { _, _, err := acquire(l, ctx, "k", lim); gone <- err }()
		synctest.Wait()
		if n := queued(l, "k"); n != 1 {
			t.Fatalf("%d calls queued, want 1", n)
		}
		cancel()
		if err := <-gone; err != context.Canceled {
			t.Fatalf("cancelled waiter: %v", err)
		}
		first.Release(true)
		if _, _, err := acquire(l, context.Background(), "k", lim); err != nil {
			t.Fatalf("next caller: %v", err)
		}
	})
}

// TestWindow_PauseHolds: after a vendor 429 nothing goes until the pause
// ends, and a refusal says so.
func TestWindow_PauseHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewWindow(nil, 0)
		lim := qc{Quota: Quota{Requests: 10, Per: time.Second}}
		l.Pause("k", time.Now().Add(3*time.Second))
		_, _, err := acquire(l, context.Background(), "k", lim)
		if ref, ok := IsRefused(err); !ok || !ref.Paused || ref.RetryAfter != 3*time.Second {
			t.Fatalf("paused: %v", err)
		}
		time.Sleep(3 * time.Second)
		if _, _, err := acquire(l, context.Background(), "k", lim); err != nil {
			t.Fatalf("after the pause: %v", err)
		}
	})
}

// BenchmarkWindowDecision is one admission and its release under a quota
// with room: the per-call cost of the local sliding window.
func BenchmarkWindowDecision(b *testing.B) {
	l := NewWindow(nil, 0)
	lim := qc{Quota: Quota{Requests: 60, Per: time.Minute}, Call: Call{MaxWait: time.Second}}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_, tk, err := acquire(l, ctx, "upstream:huntress", lim)
		if err != nil {
			b.Fatal(err)
		}
		tk.Release(false)
	}
}
