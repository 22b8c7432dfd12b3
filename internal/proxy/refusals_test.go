package proxy_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestRefusals_AKnownCallersRefusalsAreBudgeted: a caller with a valid key
// that keeps getting refused writes records only within its budget; beyond
// it each refusal keeps its status, is counted in one refusal_summary, and
// its allowed calls are still recorded. Another caller is untouched.
func TestRefusals_AKnownCallersRefusalsAreBudgeted(t *testing.T) {
	h := newHarness(t, harnessOpts{topYAML: "server: {refusals: {per_caller: {requests: 4, per: 1h}}}\n"})
	const floods = 30
	for i := 0; i < floods; i++ {
		resp, body := h.do("GET", "/infocyte/Version", nil, bearer(siemKey)) // not in siem's rules
		contractError(t, resp, body, http.StatusForbidden, "caller_forbidden")
	}
	for i := 0; i < 5; i++ { // the form refusals of a known caller are its own too
		req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/agents", nil)
		req.URL.RawQuery = "a=1;b=2"
		req.Header.Set("Proxy-Authorization", "Bearer "+siemKey)
		resp, body := h.send(req)
		contractError(t, resp, body, http.StatusBadRequest, "bad_request")
	}
	resp, _ := h.do("GET", "/huntress/v1/agents", nil, bearer(siemKey))
	if resp.StatusCode != 200 {
		t.Fatalf("an allowed call of the refused caller: %d", resp.StatusCode)
	}
	allowedID := resp.Header.Get("X-Request-Id")
	resp, _ = h.do("GET", "/infocyte/Version", nil, bearer(soarKey))
	if resp.StatusCode != 200 {
		t.Fatalf("another caller: %d", resp.StatusCode)
	}

	recorded := 0
	for _, r := range h.records() {
		if r["caller"] == "siem" && r["outcome"] == "refused" {
			recorded++
		}
	}
	// Half the budget may come at once: 2 refusals recorded, the rest counted.
	if recorded != 2 {
		t.Errorf("%d refusals of siem recorded, want 2 (the budget's burst)", recorded)
	}
	if h.lastRecord(allowedID) == nil {
		t.Error("the allowed call of the refused caller has no record")
	}
	h.proxy.FlushRefusals()
	var summary map[string]any
	for _, line := range strings.Split(strings.TrimSpace(h.auditBuf.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if ev, ok := r["event"].(map[string]any); ok && ev["name"] == "refusal_summary" {
			summary = ev
		}
	}
	if summary == nil {
		t.Fatal("no refusal_summary event")
	}
	unrecorded := floods + 5 - recorded
	outcomes, _ := summary["outcomes"].(map[string]any)
	paths, _ := summary["paths"].([]any)
	if summary["caller"] != "siem" || summary["count"] != float64(unrecorded) ||
		outcomes["caller_forbidden"].(float64)+outcomes["bad_request"].(float64) != float64(unrecorded) || len(paths) == 0 {
		t.Errorf("summary %v, want caller siem and %d refusals by code", summary, unrecorded)
	}
	if p := paths[0].(map[string]any); p["path"] != "/Version" && p["path"] != "/v1/agents" {
		t.Errorf("most refused path %v", p)
	}
}

// TestRefusals_AWrongDropinKeyIsChargedToTheAddress: a 401 for a drop-in
// Basic credential naming a caller with a wrong key spends the keyless
// limits of the sender's address, never the named caller's budget: a
// keyless attacker cannot choose whose budget to spend.
func TestRefusals_AWrongDropinKeyIsChargedToTheAddress(t *testing.T) {
	h := newHarness(t, harnessOpts{topYAML: "server: {refusals: {per_caller: {requests: 2, per: 1h}}}\n"})
	for i := 0; i < 10; i++ {
		resp, _ := h.do("GET", "/huntress/v1/agents", nil, map[string]string{"Authorization": basicAuth("siem", "kbk_wrong_key_0123456789")})
		if resp.StatusCode != 401 && resp.StatusCode != 429 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for _, r := range h.records() {
		if r["caller"] == "siem" {
			t.Errorf("a wrong key was charged to siem: %v", r)
		}
	}
	// siem's own budget is whole: its first refusal is recorded.
	resp, _ := h.do("GET", "/infocyte/Version", nil, bearer(siemKey))
	if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); rec == nil || !strings.HasPrefix(rec["error"].(string), "caller_forbidden") {
		t.Errorf("siem's first refusal was not recorded: %v", rec)
	}
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}
