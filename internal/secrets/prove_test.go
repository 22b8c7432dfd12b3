package secrets

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// prover is a vendor that accepts the values it is told to, counting the
// probes of each version.
type prover struct {
	mu     sync.Mutex
	accept map[Secret]bool
	asked  map[int]int
}

func (p *prover) prove(_ context.Context, _ string, c Credential) (Proof, Verdict) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked[c.Version]++
	if p.accept[c.Fields["api_secret"]] {
		return Accepted, Verdict{Status: 200, Detail: "answered 200"}
	}
	return Refused, Verdict{Status: 401, Detail: "answered 401"}
}

func (p *prover) times(version int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asked[version]
}

// TestCache_RefusedVersionIsProvedAgainAfterADoublingBackOff: a refused
// version is asked about again after 1 minute, then 2, 4, … up to 30, while
// it stays the same; the version in use serves meanwhile, also long past
// max_stale (the source answers: it is not stale). A change of the value
// is proved at once.
func TestCache_RefusedVersionIsProvedAgainAfterADoublingBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{fields: good, version: 1}
		p := &prover{accept: map[Secret]bool{plantedValue: true}, asked: map[int]int{}}
		c := newTestCache(t, src, Options{Prove: p.prove})
		ctx := context.Background()
		if _, err := c.Get(ctx, "huntress"); err != nil {
			t.Fatal(err)
		}
		src.set(map[string]Secret{"api_key": "k1", "api_secret": "typo"}, 2, nil)

		var gaps []time.Duration
		last := time.Now()
		for range 8 * 60 { // eight hours, one refresh a minute
			if err := c.Refresh(ctx, "huntress"); err != nil {
				t.Fatal(err)
			}
			if n := p.times(2); n > len(gaps) {
				gaps = append(gaps, time.Now().Sub(last))
				last = time.Now()
			}
			cred, err := c.Get(ctx, "huntress")
			if err != nil || cred.Version != 1 {
				t.Fatalf("version %d served (%v); the refused version 2 must wait", cred.Version, err)
			}
			time.Sleep(time.Minute)
		}
		// Eight hours: at 0, 1, 3, 7, 15, 31 minutes, then every 30 to 451.
		want := "[0s 1m0s 2m0s 4m0s 8m0s 16m0s" + strings.Repeat(" 30m0s", 14) + "]"
		if got := fmt.Sprint(gaps); got != want {
			t.Fatalf("probes of version 2 at gaps %s, want %s", got, want)
		}
		st := c.Status()[0]
		if !st.Rejected || st.Probe.Result != "refused" || st.Probe.Version != 2 {
			t.Fatalf("status %+v, want version 2 rejected", st)
		}

		// The value changes (same version number: a file): proved at once.
		p.mu.Lock()
		p.accept["fixed"] = true
		p.mu.Unlock()
		src.set(map[string]Secret{"api_key": "k1", "api_secret": "fixed"}, 3, nil)
		if err := c.Refresh(ctx, "huntress"); err != nil {
			t.Fatal(err)
		}
		if cred, _ := c.Get(ctx, "huntress"); cred.Version != 3 || c.Status()[0].Rejected {
			t.Fatalf("after the fix: version %d, rejected %v", cred.Version, c.Status()[0].Rejected)
		}
	})
}
