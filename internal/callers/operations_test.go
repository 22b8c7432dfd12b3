package callers

import (
	"strings"
	"testing"
)

// TestAllow_OperationsAndTiers: a rule with tiers or operations matches
// documented calls only; its fields AND (tiers with paths), rules OR; the
// refusal names the operation and its tier.
func TestAllow_OperationsAndTiers(t *testing.T) {
	r, err := NewRegistry([]Caller{
		{Name: "siem-collector", KeySHA256: sum("kbk_1"), Allow: []Rule{
			{Upstream: "huntress", Tiers: []string{"read"}, Paths: []string{"/v1/agents/**", "/v1/siem/**"}},
		}},
		{Name: "soar", KeySHA256: sum("kbk_2"), Allow: []Rule{
			{Upstream: "huntress", Tiers: []string{"read", "respond"}},
			{Upstream: "huntress", Operations: []string{"update_agent"}, Methods: []string{"PATCH"}},
		}},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	siem, _ := r.Named("siem-collector")
	soar, _ := r.Named("soar")
	for _, tc := range []struct {
		id        Identity
		method    string
		path, op  string
		tier      string
		allowed   bool
		reasonHas string
	}{
		{siem, "GET", "/v1/agents", "list_agents", "read", true, ""},
		{siem, "POST", "/v1/siem/query", "execute_esql_query", "read", true, ""},
		{siem, "GET", "/v1/invoices", "list_account_invoices", "read", false, "operation list_account_invoices (read) is not allowed for caller siem-collector"},
		{siem, "POST", "/v1/agents/7/isolation", "isolate_agent", "respond", false, "operation isolate_agent (respond) is not allowed for caller siem-collector"},
		{siem, "GET", "/v1/agents/undocumented", "", "", false, "no allow rule for GET /v1/agents/undocumented"},
		{soar, "POST", "/v1/accounts/42/agents/7/isolation", "isolate_agent", "respond", true, ""},
		{soar, "DELETE", "/v1/agents/7", "uninstall_agent", "admin", false, "operation uninstall_agent (admin) is not allowed for caller soar"},
		{soar, "PATCH", "/v1/agents/7", "update_agent", "admin", true, ""},
		{soar, "GET", "/v1/not/documented", "", "", false, ""},
	} {
		d := tc.id.Allow(Action{Upstream: "huntress", Method: tc.method, Path: tc.path, Operation: tc.op, Tier: tc.tier})
		if d.Allowed != tc.allowed || !strings.Contains(d.Reason, tc.reasonHas) {
			t.Errorf("%s %s %s (%s): %+v; want allowed %v, reason with %q", tc.id.Name, tc.method, tc.path, tc.op, d, tc.allowed, tc.reasonHas)
		}
	}
}
