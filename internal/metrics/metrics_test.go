package metrics

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybroker/keybroker/internal/audit"
)

// The per-call series are resolved once per configuration; a call must
// still land in the series its upstream, caller, status and outcome name,
// and names added by a reload get their own series.
func TestCallFinished_CountsIntoTheRightSeries(t *testing.T) {
	m := New([]string{"huntress"}, []string{"soar"}, State{})
	calls := []audit.Record{
		{Upstream: "huntress", Caller: "soar", Status: 200, Outcome: audit.OutcomeForwarded, DurationMS: 20, UpstreamMS: 15, Tier: "respond"},
		{Upstream: "huntress", Caller: "soar", Status: 200, Outcome: audit.OutcomeForwarded, DurationMS: 30, UpstreamMS: 25, Tier: "respond"},
		{Upstream: "huntress", Caller: "soar", Status: 200, Outcome: audit.OutcomeForwarded, Tier: "made-up"},
		{Upstream: "huntress", Caller: "soar", Status: http.StatusTooManyRequests, Outcome: audit.OutcomeForwarded},
		{Upstream: "huntress", Caller: "soar", Status: http.StatusTooManyRequests, Outcome: audit.OutcomeRefused, RateLimitedBy: "upstream"},
		{Upstream: "unknown-x", Caller: "intruder", Status: 401, Outcome: audit.OutcomeRefused},
	}
	for i := range calls {
		m.CallStarted()
		m.CallFinished(&calls[i])
	}
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"2xx forwarded, respond", testutil.ToFloat64(m.requests.WithLabelValues("huntress", "soar", "2xx", audit.OutcomeForwarded, "respond")), 2},
		{"a tier outside the three is empty", testutil.ToFloat64(m.requests.WithLabelValues("huntress", "soar", "2xx", audit.OutcomeForwarded, "")), 1},
		{"4xx forwarded", testutil.ToFloat64(m.requests.WithLabelValues("huntress", "soar", "4xx", audit.OutcomeForwarded, "")), 1},
		{"4xx refused", testutil.ToFloat64(m.requests.WithLabelValues("huntress", "soar", "4xx", audit.OutcomeRefused, "")), 1},
		{"unknown names as other", testutil.ToFloat64(m.requests.WithLabelValues("other", "other", "4xx", audit.OutcomeRefused, "")), 1},
		{"vendor 429", testutil.ToFloat64(m.vendor429.WithLabelValues("huntress")), 1},
		{"refusals", testutil.ToFloat64(m.refusals.WithLabelValues("huntress", "upstream")), 1},
		{"in flight", testutil.ToFloat64(m.inflight), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	// Configured upstreams' series exist from the start; "other" once
	// a call named an unknown upstream.
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("%d duration series, want huntress and other", n)
	}
	fresh := New([]string{"huntress"}, nil, State{})
	if n := testutil.CollectAndCount(fresh.duration); n != 1 {
		t.Errorf("%d duration series before any call, want huntress's", n)
	}

	// A reload adds an upstream: its calls get its own series.
	m.SetNames([]string{"huntress", "infocyte"}, []string{"soar"})
	m.CallStarted()
	m.CallFinished(&audit.Record{Upstream: "infocyte", Caller: "soar", Status: 200, Outcome: audit.OutcomeForwarded, DurationMS: 5})
	if got := testutil.ToFloat64(m.requests.WithLabelValues("infocyte", "soar", "2xx", audit.OutcomeForwarded, "")); got != 1 {
		t.Errorf("infocyte after reload: %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("other", "soar", "2xx", audit.OutcomeForwarded, "")); got != 0 {
		t.Errorf("infocyte counted as other: %v", got)
	}
}

// TestShares_PerCallerSeries: a shared quota's use by caller and class,
// and each caller's waits and refusals (by the limit: share, upstream).
func TestShares_PerCallerSeries(t *testing.T) {
	m := New([]string{"huntress"}, []string{"soar", "siem"}, State{
		Health: func(upstreams []string) Health {
			if !slices.Equal(upstreams, []string{"huntress"}) {
				t.Errorf("health asked for upstreams %q, want the configured ones", upstreams)
			}
			return Health{Shares: map[string][]ShareUse{"huntress": {{Caller: "soar", Reserved: 3, Shared: 1}, {Caller: "siem", Shared: 30},
				{Caller: "gone-a", Shared: 1}, {Caller: "gone-b", Shared: 2}}}}
		},
	})
	for _, rec := range []audit.Record{
		{Upstream: "huntress", Caller: "siem", Status: 429, Outcome: audit.OutcomeRefused, RateLimitedBy: "share", RateLimitWaitMS: 10000},
		{Upstream: "huntress", Caller: "siem", Status: 200, Outcome: audit.OutcomeForwarded, RateLimitWaitMS: 1500},
		{Upstream: "huntress", Caller: "soar", Status: 200, Outcome: audit.OutcomeForwarded},
	} {
		m.CallStarted()
		m.CallFinished(&rec)
	}
	want := `
# HELP keybroker_quota_share_in_use Slots of a shared upstream quota (rate_limit.shares) each caller holds, by class: reserved or shared.
# TYPE keybroker_quota_share_in_use gauge
keybroker_quota_share_in_use{caller="other",class="reserved",upstream="huntress"} 0
keybroker_quota_share_in_use{caller="other",class="shared",upstream="huntress"} 3
keybroker_quota_share_in_use{caller="siem",class="reserved",upstream="huntress"} 0
keybroker_quota_share_in_use{caller="siem",class="shared",upstream="huntress"} 30
keybroker_quota_share_in_use{caller="soar",class="reserved",upstream="huntress"} 3
keybroker_quota_share_in_use{caller="soar",class="shared",upstream="huntress"} 1
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), "keybroker_quota_share_in_use"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.callerRefused.WithLabelValues("huntress", "siem", "share")); got != 1 {
		t.Errorf("siem's share refusals %v", got)
	}
	if n := testutil.CollectAndCount(m.callerWaits); n != 1 {
		t.Errorf("%d caller wait series, want siem's only (soar never waited)", n)
	}
}

// TestSetNames_AlertAndDashboardSeriesExistFromTheStart: before any call,
// the series the shipped alerts and dashboard read are exported at zero
// for the configured names: TLS failures by every reason, refusals by
// every quota, calls per caller, unrecorded refusals per caller.
func TestSetNames_AlertAndDashboardSeriesExistFromTheStart(t *testing.T) {
	m := New([]string{"huntress", "infocyte"}, []string{"soar", "siem"}, State{})
	for _, tc := range []struct {
		name string
		c    *prometheus.CounterVec
		want int
	}{
		{"tls handshake failures", m.tlsFailures, 2 * 7},
		{"ratelimit refusals", m.refusals, 2 * 3},
		{"requests", m.requests, 2 * 2},
		{"unrecorded refusals", m.unrecorded, 2},
	} {
		if n := testutil.CollectAndCount(tc.c); n != tc.want {
			t.Errorf("%s: %d series before any call; want %d", tc.name, n, tc.want)
		}
	}
	if v := testutil.ToFloat64(m.tlsFailures.WithLabelValues("infocyte", "expired")); v != 0 {
		t.Errorf("a pre-created series is %v", v)
	}
	// A reload's new names get theirs too.
	m.SetNames([]string{"huntress", "infocyte", "rogue"}, []string{"soar", "siem"})
	if n := testutil.CollectAndCount(m.tlsFailures); n != 3*7 {
		t.Errorf("after a reload: %d TLS series; want 21", n)
	}
}
