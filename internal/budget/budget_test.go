package budget_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keybroker/keybroker/internal/budget"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

func TestBudget_RecordsWithinCountsBeyond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New("refusals", ratelimit.NewLocal(nil), nil)
		lim := budget.Limits{Each: ratelimit.Quota{Requests: 60, Per: time.Minute, Burst: 3}}
		ctx := context.Background()
		for i := range 3 {
			if _, over := b.Charge(ctx, "siem", lim, budget.Refusal{Code: "caller_forbidden", Path: "/v1/x"}); over {
				t.Fatalf("refusal %d of a burst of 3 was over the budget", i+1)
			}
		}
		retry, over := b.Charge(ctx, "siem", lim, budget.Refusal{Code: "caller_forbidden", Path: "/v1/x"})
		if !over || retry <= 0 || retry > 2*time.Second {
			t.Fatalf("4th refusal: over %v retry %v; want over, retry about 1s (a token a second)", over, retry)
		}
		b.Charge(ctx, "siem", lim, budget.Refusal{Code: "rate_limited", Path: "/v1/y"})
		// Another party has its own budget.
		if _, over := b.Charge(ctx, "soar", lim, budget.Refusal{Code: "caller_forbidden"}); over {
			t.Fatal("a second party was charged for the first one's refusals")
		}
		got := b.Flush()
		if len(got) != 1 || got[0].Party != "siem" || got[0].Count != 2 ||
			got[0].Codes["caller_forbidden"] != 1 || got[0].Codes["rate_limited"] != 1 || len(got[0].Paths) != 2 {
			t.Fatalf("flush = %+v; want siem counted twice, by code and path", got)
		}
		if again := b.Flush(); len(again) != 0 {
			t.Fatalf("a second flush returned %+v; want nothing", again)
		}
		// The budget has room again when retry said.
		time.Sleep(retry)
		if _, over := b.Charge(ctx, "siem", lim, budget.Refusal{}); over {
			t.Fatalf("%v later, as retry said, the budget had no room", retry)
		}
	})
}

func TestBudget_TotalBoundsAllParties(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New("unidentified", ratelimit.NewLocal(nil), nil)
		lim := budget.Limits{
			Each:  ratelimit.Quota{Requests: 60, Per: time.Minute, Burst: 30},
			Total: ratelimit.Quota{Requests: 60, Per: time.Minute, Burst: 5},
		}
		over := 0
		for i := range 10 {
			if _, o := b.Charge(context.Background(), fmt.Sprintf("10.0.0.%d", i), lim, budget.Refusal{}); o {
				over++
			}
		}
		if over != 5 {
			t.Fatalf("%d of 10 sources over a total burst of 5; want 5", over)
		}
		var n int64
		for _, s := range b.Flush() {
			n += s.Count
			if s.Codes != nil || s.Paths != nil {
				t.Errorf("summary %+v counts codes or paths it was not given", s)
			}
		}
		if n != 5 {
			t.Fatalf("flush counted %d; want 5", n)
		}
	})
}

func TestBudget_BoundsPartiesAndPaths(t *testing.T) {
	b := budget.New("refusals", ratelimit.NewLocal(nil), nil)
	none := budget.Limits{Each: ratelimit.Quota{Requests: 1, Per: time.Hour, Burst: 1}}
	ctx := context.Background()
	for i := range budget.MaxParties + 10 {
		p := fmt.Sprintf("caller-%d", i)
		b.Charge(ctx, p, none, budget.Refusal{})
		b.Charge(ctx, p, none, budget.Refusal{}) // the second is over
	}
	for range 3 {
		b.Charge(ctx, "caller-0", none, budget.Refusal{Path: "/hot"})
	}
	for i := range budget.MaxPaths + 10 {
		b.Charge(ctx, "caller-0", none, budget.Refusal{Path: fmt.Sprintf("/p/%d", i)})
	}
	sums := b.Flush()
	if len(sums) != budget.MaxParties+1 {
		t.Fatalf("%d parties summarised; want %d and %q", len(sums), budget.MaxParties, budget.Other)
	}
	var other, first budget.Summary
	for _, s := range sums {
		switch s.Party {
		case budget.Other:
			other = s
		case "caller-0":
			first = s
		}
	}
	if other.Count != 10 {
		t.Errorf("%q counted %d; want the 10 parties past the bound", budget.Other, other.Count)
	}
	if len(first.Paths) != budget.TopPaths || first.Paths[0].Path != budget.Other || first.Paths[0].Count != 11 ||
		first.Paths[1].Path != "/hot" || first.Paths[1].Count != 3 {
		t.Errorf("top paths %+v; want %q ×11 (the paths past the bound) first, then /hot ×3", first.Paths, budget.Other)
	}
}
