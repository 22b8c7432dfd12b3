package proxy_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// countEvents sums the token_issued events by outcome (count absent: 1),
// and the named summary's counts.
func countEvents(h *harness, summary string) (byOutcome map[string]int64, summarised int64) {
	byOutcome = map[string]int64{}
	for _, ev := range h.auditEvents("token_issued") {
		n := int64(1)
		if c, ok := ev["count"].(float64); ok {
			n = int64(c)
		}
		byOutcome[ev["outcome"].(string)] += n
	}
	for _, ev := range h.auditEvents(summary) {
		summarised += int64(ev["count"].(float64))
	}
	return byOutcome, summarised
}

// TestToken_KeylessRefusalsAreBudgeted: wrong secrets and malformed token
// requests from one address are charged to its keyless limits: within
// them each writes a token_issued event, beyond them it gets 429 and is
// only counted, in unidentified_summary; and the right secret still gets
// a token (the limits bound records, they are no lockout).
func TestToken_KeylessRefusalsAreBudgeted(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	h := newHarness(t, harnessOpts{sat: sat})
	const n = 100
	got := map[int]int{}
	for i := range n {
		var resp *http.Response
		if i%2 == 0 {
			resp, _ = fetchToken(h, "soar", "kbk_wrong_secret_"+fmt.Sprint(i), false)
		} else {
			resp, _ = h.do("POST", "/huntress-sat/oauth/token", strings.NewReader("grant_type=password"),
				map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		}
		got[resp.StatusCode]++
		if resp.StatusCode == 429 && (resp.Header.Get("Retry-After") == "" || resp.Header.Get("Keybroker-Error") != "rate_limited") {
			t.Fatalf("a keyless 429 without Retry-After or Keybroker-Error: %v", resp.Header)
		}
	}
	// The default per-source limit: 30 at once.
	if got[429] != n-30 {
		t.Fatalf("replies %v; want %d × 429 past the 30 the address may have recorded", got, n-30)
	}
	if resp, tok := fetchToken(h, "soar", soarKey, false); resp.StatusCode != 200 || tok["access_token"] == nil {
		t.Errorf("the right secret while the address is over its limit: %d %v", resp.StatusCode, tok)
	}
	h.proxy.FlushSummary()
	byOutcome, summarised := countEvents(h, "unidentified_summary")
	if byOutcome["invalid_client"]+byOutcome["unsupported_grant_type"] != 30 || summarised != n-30 || byOutcome["rate_limited"] != 0 {
		t.Errorf("events %v and %d summarised; want 30 events and %d summarised, no event for a 429", byOutcome, summarised, n-30)
	}
	if n := len(h.records()); n != 0 {
		t.Errorf("%d call records for token requests", n)
	}
}

// TestToken_AKnownCallersRefusalsAndIssuesAreBounded: a known caller
// without an allow rule for the upstream is refused (400
// unauthorized_client) within its refusal budget with an event each, and
// beyond it counted in refusal_summary (code, path /oauth/token). Issuing
// counts against the caller's own rate_limit (429, no wait), and issues
// are one token_issued per caller and upstream per interval, with count.
func TestToken_AKnownCallersRefusalsAndIssuesAreBounded(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	h := newHarness(t, harnessOpts{sat: sat, callersYAML: fmt.Sprintf(`
callers:
  - name: soar
    key_sha256: %s
    rate_limit: {requests: 4, per: 1h, burst: 3}
  - name: siem
    key_sha256: %s
    allow: [{upstream: huntress, methods: [GET]}]
`, callers.HashKey(soarKey), callers.HashKey(siemKey))})
	const n = 100
	for range n {
		if resp, tok := fetchToken(h, "siem", siemKey, false); resp.StatusCode != 400 || tok["error"] != "unauthorized_client" {
			t.Fatalf("siem without an allow rule: %d %v", resp.StatusCode, tok)
		}
	}
	h.proxy.FlushRefusals()
	byOutcome, summarised := countEvents(h, "refusal_summary")
	// The default refusal budget: 30 at once.
	if byOutcome["unauthorized_client"] != 30 || summarised != n-30 {
		t.Errorf("%v events, %d summarised; want 30 and %d", byOutcome, summarised, n-30)
	}
	for _, ev := range h.auditEvents("refusal_summary") {
		paths, _ := ev["paths"].([]any)
		if ev["caller"] != "siem" || ev["outcomes"].(map[string]any)["bad_request"] != float64(n-30) ||
			len(paths) != 1 || paths[0].(map[string]any)["path"] != "/oauth/token" {
			t.Errorf("refusal_summary %v; want siem, bad_request ×%d, path /oauth/token", ev, n-30)
		}
	}

	// soar may have 3 tokens at once (4 an hour).
	for i := range 5 {
		resp, tok := fetchToken(h, "soar", soarKey, false)
		switch {
		case i < 3 && resp.StatusCode != 200:
			t.Fatalf("token %d: %d %v", i+1, resp.StatusCode, tok)
		case i >= 3 && (resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || tok["error"] != "temporarily_unavailable"):
			t.Fatalf("token %d over the caller's rate_limit: %d %v %v", i+1, resp.StatusCode, tok, resp.Header)
		}
	}
	h.proxy.FlushTokens()
	byOutcome, _ = countEvents(h, "refusal_summary")
	if byOutcome["issued"] != 3 || byOutcome["rate_limited"] != 2 || len(h.auditEvents("token_issued")) != 30+1+2 {
		t.Errorf("token_issued %v (%d events); want issued 3 in one event, rate_limited 2", byOutcome, len(h.auditEvents("token_issued")))
	}
}

// failingAudit is a trail that cannot be written.
type failingAudit struct{ *audit.Writer }

func (failingAudit) Check() error { return errors.New("disk full") }

// TestToken_NoTokenWhileTheTrailCannotBeWritten: 503 audit_unavailable,
// as for a call.
func TestToken_NoTokenWhileTheTrailCannotBeWritten(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	h := newHarness(t, harnessOpts{sat: sat, auditor: failingAudit{audit.NewWriter(&syncBuffer{})}})
	resp, tok := fetchToken(h, "soar", soarKey, false)
	if resp.StatusCode != 503 || resp.Header.Get("Keybroker-Error") != "audit_unavailable" || tok["access_token"] != nil {
		t.Errorf("with the trail unwritable: %d %v %v", resp.StatusCode, resp.Header.Get("Keybroker-Error"), tok)
	}
}
