package ratelimit

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestLimit_NeverMoreThanRequestsInAnyWindow drives the limiter on the
// bubble's fake clock at a demand far above the quota and checks the sliding
// window over every admitted call.
func TestLimit_NeverMoreThanRequestsInAnyWindow(t *testing.T) {
	synctest.Test(t, testLimitNeverMoreThanRequests)
}

func testLimitNeverMoreThanRequests(t *testing.T) {
	cases := []qc{
		{Quota: Quota{Requests: 60, Per: time.Minute, Burst: 1}},
		{Quota: Quota{Requests: 60, Per: time.Minute, Burst: 10}},
		{Quota: Quota{Requests: 10, Per: 2 * time.Second, Burst: 5}},
		{Quota: Quota{Requests: 1, Per: time.Second, Burst: 1}},
	}
	for _, lim := range cases {
		l := NewLocal(nil)
		var admitted []time.Time
		// Every 10 ms for 5 windows, try a call that may not wait.
		for step := time.Duration(0); step < 5*lim.Per; step += 10 * time.Millisecond {
			if _, err := wait(l, context.Background(), "k", lim); err == nil {
				admitted = append(admitted, time.Now())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := busiestWindow(admitted, lim.Per); n > lim.Requests {
			t.Errorf("%+v: %d calls in one window", lim, n)
		}
		// Close to the whole quota is used: (requests-burst) per window
		// plus the initial burst.
		wantMin := int(float64(lim.Requests-lim.Burst)*5*0.95) + lim.Burst
		if lim.Requests == 1 {
			wantMin = 5
		}
		if len(admitted) < wantMin {
			t.Errorf("%+v: %d calls admitted in 5 windows, want at least %d", lim, len(admitted), wantMin)
		}
	}
}

func TestLocal_WaitsUpToMaxWaitThenRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal(nil)
		lim := qc{Quota: Quota{Requests: 2, Per: 10 * time.Second, Burst: 1}, Call: Call{MaxWait: 0}}
		if _, err := wait(l, context.Background(), "k", lim); err != nil {
			t.Fatal(err)
		}
		_, err := wait(l, context.Background(), "k", lim)
		ref, ok := IsRefused(err)
		if !ok || ref.RetryAfter < 9*time.Second || ref.RetryAfter > 10*time.Second || ref.Limit != 2 {
			t.Fatalf("second call: %v (%+v), want refused with retry after ~10s", err, ref)
		}
		// A refused call gives its slot back: after the refill one call goes.
		time.Sleep(10 * time.Second)
		if _, err := wait(l, context.Background(), "k", lim); err != nil {
			t.Errorf("after refill: %v", err)
		}
	})
}

func TestLocal_WaitEndsWhenCallerGoesAway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal(nil)
		lim := qc{Quota: Quota{Requests: 2, Per: time.Hour, Burst: 1}, Call: Call{MaxWait: time.Hour}}
		_, _ = wait(l, context.Background(), "k", lim)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := wait(l, ctx, "k", lim)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 50*time.Millisecond {
			t.Errorf("wait did not end with the caller: %v after %v", err, time.Since(start))
		}
	})
}

func TestLocal_PauseHoldsCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal(nil)
		lim := qc{Call: Call{MaxWait: time.Second}} // no quota, only pauses
		if _, err := wait(l, context.Background(), "u", lim); err != nil {
			t.Fatal(err)
		}
		l.Pause("u", time.Now().Add(60*time.Second))
		_, err := wait(l, context.Background(), "u", lim)
		if ref, ok := IsRefused(err); !ok || !ref.Paused || ref.RetryAfter != 60*time.Second {
			t.Fatalf("paused: %v", err)
		}
		time.Sleep(61 * time.Second)
		if _, err := wait(l, context.Background(), "u", lim); err != nil {
			t.Errorf("after the pause: %v", err)
		}
	})
}

func TestLocal_EvictsIdleBuckets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal(nil)
		lim := qc{Quota: Quota{Requests: 10, Per: time.Second, Burst: 1}}
		for i := range 1000 {
			_, _ = wait(l, context.Background(), "caller:"+string(rune('a'+i%26))+string(rune(i)), lim)
		}
		if l.Len() != 1000 {
			t.Fatalf("%d buckets", l.Len())
		}
		time.Sleep(5 * time.Minute)
		_, _ = wait(l, context.Background(), "caller:new", lim)
		if l.Len() != 1 {
			t.Errorf("%d buckets after idle sweep, want 1", l.Len())
		}
	})
}

func TestLimit_Rate(t *testing.T) {
	if r := (qc{Quota: Quota{Requests: 60, Per: time.Minute, Burst: 1}}).Rate(); r < 0.983 || r > 0.984 {
		t.Errorf("huntress rate %v, want 59/60", r)
	}
	if r := (qc{Quota: Quota{Requests: 1, Per: time.Second, Burst: 1}}).Rate(); r != 1 {
		t.Errorf("1/s rate %v", r)
	}
}

func BenchmarkLocalDecision(b *testing.B) {
	l := NewLocal(nil)
	lim := qc{Quota: Quota{Requests: 1 << 30, Per: time.Second, Burst: 1 << 20}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, _ = wait(l, ctx, "upstream:huntress", lim)
	}
}
