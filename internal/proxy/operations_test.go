package proxy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keybroker/keybroker/internal/callers"
)

// tierCallers: a read-only caller on Huntress, and a responder.
const tierCallers = `
callers:
  - name: soar
    key_sha256: %s
    allow:
      - {upstream: huntress, tiers: [read, respond]}
  - name: siem
    key_sha256: %s
    allow:
      - {upstream: huntress, tiers: [read]}
`

// TestPolicy_TiersInTheVendorsTerms: a read caller may list agents and
// run an ES|QL query (a read sent as POST) but not isolate; a respond
// caller may isolate in the account path form but not uninstall; a tier
// rule refuses an undocumented path; the refusal names the operation and
// its tier; every record carries operation and tier; the vendor saw
// exactly the allowed calls.
func TestPolicy_TiersInTheVendorsTerms(t *testing.T) {
	h := newHarness(t, harnessOpts{callersYAML: fmt.Sprintf(tierCallers, callers.HashKey(soarKey), callers.HashKey(siemKey))})
	for _, tc := range []struct {
		key, method, path string
		status            int
		op, tier, message string
	}{
		{siemKey, "GET", "/huntress/v1/agents", 200, "list_agents", "read", ""},
		{siemKey, "POST", "/huntress/v1/siem/query", 200, "execute_esql_query", "read", ""},
		{siemKey, "POST", "/huntress/v1/agents/7/isolation", 403, "isolate_agent", "respond", "operation isolate_agent (respond) is not allowed for caller siem"},
		{soarKey, "POST", "/huntress/v1/accounts/42/agents/7/isolation", 200, "isolate_agent", "respond", ""},
		{soarKey, "DELETE", "/huntress/v1/agents/7", 403, "uninstall_agent", "admin", "operation uninstall_agent (admin) is not allowed for caller soar"},
		{soarKey, "GET", "/huntress/v1/undocumented", 403, "", "", "no allow rule for GET /v1/undocumented"},
	} {
		before := len(h.huntress.Requests())
		resp, body := h.do(tc.method, tc.path, strings.NewReader(""), map[string]string{"Proxy-Authorization": "Bearer " + tc.key, "X-Request-Id": "op-" + tc.op + "-" + tc.method})
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.path, resp.StatusCode, tc.status, body)
			continue
		}
		if tc.status == 403 {
			contractError(t, resp, body, 403, "caller_forbidden")
			if !strings.Contains(body, tc.message) {
				t.Errorf("%s %s: 403 body %s; want %q", tc.method, tc.path, body, tc.message)
			}
		}
		if got := len(h.huntress.Requests()) - before; got != map[bool]int{true: 1, false: 0}[tc.status == 200] {
			t.Errorf("%s %s: the vendor got %d calls", tc.method, tc.path, got)
		}
		rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
		if rec == nil || fmt.Sprint(rec["operation"]) != orNil(tc.op) || fmt.Sprint(rec["tier"]) != orNil(tc.tier) {
			t.Errorf("%s %s: record %v; want operation %q, tier %q", tc.method, tc.path, rec, tc.op, tc.tier)
		}
		if tc.status == 200 {
			// The begin line, written before the call left, names it too.
			var begin map[string]any
			for _, l := range h.auditLines() {
				if l["type"] == "begin" && l["request_id"] == resp.Header.Get("X-Request-Id") {
					begin = l
				}
			}
			if begin == nil || begin["operation"] != tc.op || begin["tier"] != tc.tier {
				t.Errorf("%s %s: begin line %v", tc.method, tc.path, begin)
			}
		}
	}
}

func orNil(s string) string {
	if s == "" {
		return "<nil>"
	}
	return s
}

// TestPolicy_ReportModeWithTiers: policy_mode report forwards what a tier
// rule would refuse, and records would_deny with the operation.
func TestPolicy_ReportModeWithTiers(t *testing.T) {
	h := newHarness(t, harnessOpts{callersYAML: fmt.Sprintf(tierCallers, callers.HashKey(soarKey), callers.HashKey(siemKey)), topYAML: "policy_mode: report\n"})
	resp, _ := h.do("DELETE", "/huntress/v1/agents/7", nil, bearer(soarKey))
	if resp.StatusCode != 200 {
		t.Fatalf("report mode: %d", resp.StatusCode)
	}
	last := h.lastRecord(resp.Header.Get("X-Request-Id"))
	if last["policy"] != "would_deny" || last["operation"] != "uninstall_agent" || last["tier"] != "admin" {
		t.Errorf("record %v", last)
	}
}
