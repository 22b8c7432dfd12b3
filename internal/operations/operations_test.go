package operations

import (
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"Update a User's membership":  "update_a_users_membership",
		"Execute ESQL Query":          "execute_esql_query",
		"List Known VPNs and Proxies": "list_known_vpns_and_proxies",
		"  Get -- Agent  ":            "get_agent",
		"getV1AgentsId":               "getv1agentsid",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestMatch_Huntress: both path forms of an operation, a literal beating a
// parameter, HEAD as GET, and what stays undocumented (OPTIONS, a
// trailing slash, an empty segment, an unknown path, a wrong method).
func TestMatch_Huntress(t *testing.T) {
	c := Huntress()
	for _, tc := range []struct{ method, path, op string }{
		{"GET", "/v1/agents", "list_agents"},
		{"GET", "/v1/accounts/42/agents", "list_agents"},
		{"HEAD", "/v1/agents/7", "get_agent"},
		{"POST", "/v1/agents/7/isolation", "isolate_agent"},
		{"POST", "/v1/accounts/42/agents/7/isolation", "isolate_agent"},
		{"DELETE", "/v1/agents/7/isolation", "release_agent_isolation"},
		{"DELETE", "/v1/agents/7", "uninstall_agent"},
		{"DELETE", "/v1/accounts/42/agents/7", "uninstall_agent"},
		{"POST", "/v1/siem/query", "execute_esql_query"},
		{"GET", "/v1/accounts/42", "get_specific_account"},
		{"GET", "/v1/account", "get_account"},
		{"PATCH", "/v1/accounts/42/memberships/3", "update_a_users_membership"},
		{"POST", "/v1/incident_reports/5/remediations/bulk_approval", "bulk_approve_remediations"},
		{"OPTIONS", "/v1/agents", ""},
		{"GET", "/v1/agents/", ""},
		{"GET", "/v1/agents//isolation", ""},
		{"GET", "/v1/nothing", ""},
		{"PUT", "/v1/agents/7", ""},
		{"GET", "/V1/agents", ""},
		{"GET", "", ""},
	} {
		got := ""
		if op := c.Match(tc.method, tc.path); op != nil {
			got = op.Name
		}
		if got != tc.op {
			t.Errorf("%s %s = %q; want %q", tc.method, tc.path, got, tc.op)
		}
	}
}

// TestMatch_LiteralBeatsParameterAndBacktracks: /a/b/c is the literal's
// when the literal path goes on to an operation, and the parameter's when
// it does not.
func TestMatch_LiteralBeatsParameterAndBacktracks(t *testing.T) {
	c, err := New([]Operation{
		{Name: "by_id", Tier: Read, Method: "GET", Paths: []string{"/items/{id}/detail"}},
		{Name: "search", Tier: Read, Method: "GET", Paths: []string{"/items/search"}},
		{Name: "search_detail", Tier: Read, Method: "GET", Paths: []string{"/items/search/more"}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/items/search": "search", "/items/search/detail": "by_id", "/items/search/more": "search_detail", "/items/9/detail": "by_id"} {
		if op := c.Match("GET", path); op == nil || op.Name != want {
			t.Errorf("%s = %+v; want %s", path, op, want)
		}
	}
}

// TestMatch_Infocyte: literals case-insensitive, templates below /api,
// every other GET read and every other write admin.
func TestMatch_Infocyte(t *testing.T) {
	c := Infocyte()
	for _, tc := range []struct{ method, path, op string }{
		{"POST", "/targets/abc/scan", "invoke_scan"},
		{"POST", "/Targets/abc/SCAN", "invoke_scan"},
		{"POST", "/agents/uninstall", "remove_agent"},
		{"POST", "/AGENTS/Uninstall", "remove_agent"},
		{"DELETE", "/credentials/9", "remove_credential"},
		{"GET", "/Agents", "read_any"},
		{"HEAD", "/Version", "read_any"},
		{"PATCH", "/Agents/1", "write_other"},
		{"OPTIONS", "/Agents", ""},
	} {
		got := ""
		if op := c.Match(tc.method, tc.path); op != nil {
			got = op.Name
		}
		if got != tc.op {
			t.Errorf("%s %s = %q; want %q", tc.method, tc.path, got, tc.op)
		}
	}
	if op := c.Match("POST", "/targets/x/scan"); op.Tier != Respond {
		t.Errorf("a scan is %s", op.Tier)
	}
	if op := c.Match("POST", "/agents/uninstall"); op.Tier != Admin {
		t.Errorf("an uninstall is %s", op.Tier)
	}
	// An upstream URL without /api: the templates move down.
	below, err := c.Below("")
	if err != nil {
		t.Fatal(err)
	}
	if op := below.Match("POST", "/api/targets/abc/scan"); op == nil || op.Name != "invoke_scan" {
		t.Errorf("below \"\": %+v", op)
	}
	if _, err := Huntress().Below("/v2"); err == nil {
		t.Error("Huntress below /v2: no error")
	}
	v1, err := Huntress().Below("/v1")
	if err != nil {
		t.Fatal(err)
	}
	if op := v1.Match("POST", "/agents/7/isolation"); op == nil || op.Name != "isolate_agent" {
		t.Errorf("below /v1: %+v", op)
	}
}

// TestFromSpec_OpenAPI3YAML: an OpenAPI 3 document in YAML, its server's
// path stripped, default tiers (GET read, other methods admin) and an
// override; a base path that disagrees with the URL is an error.
func TestFromSpec_OpenAPI3YAML(t *testing.T) {
	spec := `
openapi: 3.0.3
info: {title: t, version: "1"}
servers: [{url: "https://vendor.example/api/v2"}]
paths:
  /hosts:
    get: {summary: List Hosts, responses: {"200": {description: ok}}}
  /hosts/{id}:
    delete: {summary: Delete Host, responses: {"204": {description: ok}}}
  /hosts/{id}/contain:
    post: {operationId: containHost, responses: {"200": {description: ok}}}
`
	ops, err := FromSpec([]byte(spec), SpecOptions{URLPath: "/api", Tiers: map[string]Tier{"containhost": Respond}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, op := range ops {
		got[op.Name] = op.Method + " " + strings.Join(op.Paths, ",") + " " + string(op.Tier)
	}
	want := map[string]string{"list_hosts": "GET /v2/hosts read", "delete_host": "DELETE /v2/hosts/{id} admin", "containhost": "POST /v2/hosts/{id}/contain respond"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q; want %q (all: %v)", k, got[k], v, got)
		}
	}
	if _, err := FromSpec([]byte(spec), SpecOptions{URLPath: "/other"}); err == nil || !strings.Contains(err.Error(), "disagree") {
		t.Errorf("a base path that disagrees: %v", err)
	}
	if _, err := FromSpec([]byte(spec), SpecOptions{URLPath: "/api", Tiers: map[string]Tier{"no_such": Read}}); err == nil {
		t.Error("a tier for an unknown operation: no error")
	}
	if _, err := FromSpec([]byte("swagger: \"1.2\"\n"), SpecOptions{}); err == nil {
		t.Error("swagger 1.2: no error")
	}
}

// BenchmarkMatch is the decision's operation lookup over the Huntress
// table, both path forms.
func BenchmarkMatch(b *testing.B) {
	c := Huntress()
	calls := []struct{ method, path string }{
		{"GET", "/v1/agents"},
		{"POST", "/v1/accounts/42/agents/7/isolation"},
		{"GET", "/v1/incident_reports/5/remediations/9"},
		{"POST", "/v1/siem/query"},
		{"DELETE", "/v1/accounts/42/memberships/3"},
		{"GET", "/v1/nothing/here"},
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		cl := calls[i%len(calls)]
		_ = c.Match(cl.method, cl.path)
	}
}

// TestNew_AliasesAndConflicts: an old name still selects its operation;
// two operations of one name, or on one method and template, are refused.
func TestNew_AliasesAndConflicts(t *testing.T) {
	c, err := New([]Operation{{Name: "isolate_host", Aliases: []string{"isolate_agent"}, Tier: Respond, Method: "POST", Paths: []string{"/hosts/{id}/isolation"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if op, ok := c.Lookup("isolate_agent"); !ok || op.Name != "isolate_host" {
		t.Errorf("alias: %+v %v", op, ok)
	}
	if _, err := New([]Operation{{Name: "a", Tier: Read, Method: "GET", Paths: []string{"/x"}}, {Name: "a", Tier: Read, Method: "GET", Paths: []string{"/y"}}}, Options{}); err == nil {
		t.Error("two operations named a: no error")
	}
	if _, err := New([]Operation{{Name: "a", Tier: Read, Method: "GET", Paths: []string{"/x/{id}"}}, {Name: "b", Tier: Read, Method: "GET", Paths: []string{"/x/{name}"}}}, Options{}); err == nil {
		t.Error("two operations on GET /x/{…}: no error")
	}
	if _, err := New([]Operation{{Name: "a", Tier: "write", Method: "GET", Paths: []string{"/x"}}}, Options{}); err == nil {
		t.Error("tier write: no error")
	}
}
