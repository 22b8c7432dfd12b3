package secrets

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// events collects a cache's events.
type events struct {
	mu  sync.Mutex
	got []Event
}

func (e *events) on(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, ev)
}

func (e *events) rotations() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.got {
		if ev.Type == EventRotated {
			out = append(out, ev)
		}
	}
	return out
}

var typo = map[string]Secret{"api_key": "k1", "api_secret": "typo"}

// proving is a cache serving version 1, which the vendor accepts, proving
// rotations.
func proving(t *testing.T) (*Cache, *fakeSource, *prover, *events) {
	t.Helper()
	src := &fakeSource{fields: good, version: 1}
	p := &prover{accept: map[Secret]bool{plantedValue: true}, asked: map[int]int{}}
	ev := &events{}
	c := newTestCache(t, src, Options{Prove: p.prove, OnEvent: ev.on, MinReread: time.Second})
	if _, err := c.Get(context.Background(), "huntress"); err != nil {
		t.Fatal(err)
	}
	return c, src, p, ev
}

// heldBack is a cache serving version 1 (which the vendor accepts) with
// version 2 (which it refuses) held back.
func heldBack(t *testing.T) (*Cache, *fakeSource, *prover, *events) {
	t.Helper()
	c, src, p, ev := proving(t)
	ctx := context.Background()
	src.set(typo, 2, nil)
	if err := c.Refresh(ctx, "huntress"); err != nil {
		t.Fatal(err)
	}
	if cred, _ := c.Get(ctx, "huntress"); cred.Version != 1 || !c.Status()[0].Rejected {
		t.Fatalf("setup: version %d served, rejected %v; want 1 serving, 2 held back", cred.Version, c.Status()[0].Rejected)
	}
	return c, src, p, ev
}

// TestCache_ACallsRefusalNeverPromotesARefusedVersion: a low-privilege
// caller's call gets a vendor 401 while version 2 is held back. The
// version in use is proved; the vendor accepts it, so nothing changes:
// version 1 serves, no rotation, and later 401s within the minute reuse
// that verdict instead of spending the vendor's quota.
func TestCache_ACallsRefusalNeverPromotesARefusedVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, p, ev := heldBack(t)
		ctx := context.Background()
		for i := range 5 {
			cred, err := c.Refused(ctx, "huntress", 1)
			if err != nil || cred.Version != 1 {
				t.Fatalf("401 %d: version %d (%v); want 1 kept", i+1, cred.Version, err)
			}
			time.Sleep(2 * time.Second)
		}
		if n := p.times(1); n != 2 { // once at the rotation, once for the 401s
			t.Errorf("the version in use was proved %d times; want 2 (one for five 401s in a minute)", n)
		}
		if r := ev.rotations(); len(r) != 0 {
			t.Errorf("rotations %+v; want none", r)
		}
		// The next background refresh does not promote it either (no flag
		// left behind by the 401s).
		time.Sleep(time.Minute)
		if err := c.Refresh(ctx, "huntress"); err != nil {
			t.Fatal(err)
		}
		if cred, _ := c.Get(ctx, "huntress"); cred.Version != 1 || len(ev.rotations()) != 0 {
			t.Errorf("after a refresh: version %d, rotations %v; want 1, none", cred.Version, ev.rotations())
		}
	})
}

// TestCache_BothRefusedSwitchesWithTheReason: once the vendor refuses the
// version in use too (it was regenerated), a 401 switches to the
// held-back version, reported rotated, not validated, with the reason.
func TestCache_BothRefusedSwitchesWithTheReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, p, ev := heldBack(t)
		p.mu.Lock()
		p.accept[plantedValue] = false
		p.mu.Unlock()
		cred, err := c.Refused(context.Background(), "huntress", 1)
		if err != nil || cred.Version != 2 {
			t.Fatalf("version %d (%v); want 2", cred.Version, err)
		}
		r := ev.rotations()
		if len(r) != 1 || r[0].Validated == nil || *r[0].Validated || r[0].OldVersion != 1 || !strings.Contains(r[0].Error, "refused the version in use too") {
			t.Errorf("rotations %+v; want one, 1 → 2, not validated, with the reason", r)
		}
		if c.Status()[0].Rejected {
			t.Error("still reported rejected after the switch")
		}
	})
}

// TestCache_ARefusalOfAnOldVersionChangesNothing: a 401 for a version no
// longer in use reads nothing and proves nothing.
func TestCache_ARefusalOfAnOldVersionChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, src, p, _ := heldBack(t)
		reads, asked := src.reads.Load(), p.times(1)+p.times(2)
		if cred, err := c.Refused(context.Background(), "huntress", 0); err != nil || cred.Version != 1 {
			t.Fatalf("version %d (%v)", cred.Version, err)
		}
		if src.reads.Load() != reads || p.times(1)+p.times(2) != asked {
			t.Error("a refusal of a version no longer in use read the source or proved a version")
		}
	})
}

// TestCache_A401RacingABrokenRotationProvesIt: a 401 that comes as a
// broken rotation lands (not yet held back) makes the read that finds it,
// and that read proves it like any rotation: refused, held back, version
// 1 serves.
func TestCache_A401RacingABrokenRotationProvesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, src, p, ev := proving(t)
		src.set(typo, 2, nil)
		cred, err := c.Refused(context.Background(), "huntress", 1)
		if err != nil || cred.Version != 1 || p.times(2) != 1 || len(ev.rotations()) != 0 {
			t.Fatalf("version %d (%v), version 2 proved %d times, rotations %v; want 1 kept, 2 proved once, none",
				cred.Version, err, p.times(2), ev.rotations())
		}
	})
}

// TestCache_ARevertedValueClearsItsRejection: a broken value written to a
// file source is held back; once the good value is back the rejection and
// its back-off are gone.
func TestCache_ARevertedValueClearsItsRejection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{fields: good} // version 0: a file
		p := &prover{accept: map[Secret]bool{plantedValue: true}, asked: map[int]int{}}
		c := newTestCache(t, src, Options{Prove: p.prove})
		ctx := context.Background()
		if _, err := c.Get(ctx, "huntress"); err != nil {
			t.Fatal(err)
		}
		src.set(typo, 0, nil)
		_ = c.Refresh(ctx, "huntress")
		if !c.Status()[0].Rejected {
			t.Fatal("the broken value is not held back")
		}
		src.set(good, 0, nil)
		_ = c.Refresh(ctx, "huntress")
		if st := c.Status()[0]; st.Rejected || st.Version != 1 {
			t.Errorf("after the revert: %+v; want version 1, nothing rejected", st)
		}
		// A new broken value is proved at once, not after an old back-off.
		src.set(map[string]Secret{"api_key": "k1", "api_secret": "typo2"}, 0, nil)
		before := p.times(2)
		_ = c.Refresh(ctx, "huntress")
		if p.times(2) != before+1 || !c.Status()[0].Rejected {
			t.Errorf("a new broken value after the revert was not proved at once")
		}
	})
}

// TestCache_ARepeatedFailureIsReportedOnce: a source failing the same way
// at every retry (a placeholder left in it) writes one refresh_failed
// event, not one per retry; a different failure is reported, and after a
// success the same failure is news again. Every failure is counted.
func TestCache_ARepeatedFailureIsReportedOnce(t *testing.T) {
	src := &fakeSource{fields: map[string]Secret{"api_key": "REPLACE_WITH_HUNTRESS_API_KEY", "api_secret": "REPLACE_WITH_X"}}
	ev := &events{}
	c := newTestCache(t, src, Options{OnEvent: ev.on})
	ctx := context.Background()
	failures := func() int {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		n := 0
		for _, e := range ev.got {
			if e.Type == EventRefreshFailed {
				n++
			}
		}
		return n
	}
	for range 10 {
		_ = c.Refresh(ctx, "huntress")
	}
	if n := failures(); n != 1 {
		t.Fatalf("%d refresh_failed events for ten reads of one placeholder; want 1", n)
	}
	src.set(nil, 0, errors.New("connection refused"))
	_ = c.Refresh(ctx, "huntress")
	_ = c.Refresh(ctx, "huntress")
	if n := failures(); n != 2 {
		t.Errorf("%d events after a different failure; want 2", n)
	}
	src.set(good, 0, nil)
	_ = c.Refresh(ctx, "huntress")
	src.set(nil, 0, errors.New("connection refused"))
	_ = c.Refresh(ctx, "huntress")
	if n := failures(); n != 3 {
		t.Errorf("%d events after a success and the same failure again; want 3", n)
	}
	if st := c.Status()[0]; st.Failures != 13 {
		t.Errorf("%d failures counted; want every one (13)", st.Failures)
	}
}
