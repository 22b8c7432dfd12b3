package audit

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// knownTrail writes a trail of known content: over three days, soar makes
// 30 forwarded calls to huntress (credential versions 1 then 2), siem 10
// calls of which 4 denied (3 on /v1/admin, 1 on /v1/users) and 2 refused
// by the quota, one keyless call, a rotation, a reload, a rejected reload
// and an audit outage.
func knownTrail(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	t0 := time.Date(2026, 7, 1, 9, 0, 0, 0, time.UTC)
	call := func(at time.Time, r Record) {
		r.Type, r.Time = TypeCall, Time(at)
		if err := w.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 30; i++ {
		v := 1
		if i >= 20 {
			v = 2
		}
		call(t0.Add(time.Duration(i)*2*time.Hour), Record{Caller: "soar", CallerAuth: "key", Upstream: "huntress", Path: "/v1/agents",
			Status: 200, Outcome: OutcomeForwarded, Policy: PolicyAllowed, Credential: &CredentialRef{Source: "vault", Ref: "secret/h", Version: v}})
	}
	at := t0.Add(26 * time.Hour)
	for i, p := range []string{"/v1/admin", "/v1/admin", "/v1/users", "/v1/admin"} {
		call(at.Add(time.Duration(i)*time.Minute), Record{Caller: "siem", CallerAuth: "key", Upstream: "huntress", Path: p,
			Status: 403, Outcome: OutcomeRefused, Policy: PolicyDenied, Error: "caller_forbidden: ..."})
	}
	for i := 0; i < 2; i++ {
		call(at.Add(10*time.Minute), Record{Caller: "siem", CallerAuth: "key", Upstream: "huntress", Path: "/v1/agents",
			Status: 429, Outcome: OutcomeRefused, Policy: PolicyAllowed, RateLimitedBy: "upstream", RateLimitWaitMS: 1500})
	}
	for i := 0; i < 4; i++ {
		call(at.Add(20*time.Minute), Record{Caller: "siem", CallerAuth: "key", Upstream: "infocyte", Path: "/Agents",
			Status: 200, Outcome: OutcomeForwarded, Policy: PolicyAllowed, RateLimitWaitMS: 20, Credential: &CredentialRef{Version: 7}})
	}
	call(at.Add(30*time.Minute), Record{CallerAuth: "none", Upstream: "huntress", Path: "/v1/agents", Status: 401, Outcome: OutcomeRefused})
	for _, ev := range []Event{{Name: "credential_rotated", Upstream: "huntress", Version: 2, OldVersion: 1},
		{Name: "config_reloaded"}, {Name: "config_rejected", Detail: "upstreams[0].preset: unknown preset"},
		{Name: "audit_recovered", Detail: "after: no space left on device"}, {Name: "started"}} {
		if err := w.WriteEvent(ev, t0.Add(40*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func buildReport(t *testing.T, f ReportFilter) *Report {
	t.Helper()
	r := NewReport(f)
	if err := r.ReadTrail([]Source{{Name: "trail", R: bytes.NewReader(knownTrail(t))}}); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReport_CountsAKnownTrail(t *testing.T) {
	r := buildReport(t, ReportFilter{})
	if len(r.Rows) != 4 {
		t.Fatalf("%d rows: %+v", len(r.Rows), r.Rows)
	}
	byKey := map[string]ReportRow{}
	for _, row := range r.Rows {
		byKey[row.Caller+"/"+row.Upstream] = row
	}
	soar := byKey["soar/huntress"]
	if soar.Calls != 30 || soar.Outcomes[OutcomeForwarded] != 30 || soar.Statuses["200"] != 30 || versions(soar.CredentialVersions) != "1 2" {
		t.Errorf("soar row %+v", soar)
	}
	siem := byKey["siem/huntress"]
	if siem.Calls != 6 || siem.Denied != 4 || siem.RateLimited != 2 || siem.WaitMSMax != 1500 || siem.Outcomes[OutcomeRefused] != 6 ||
		len(siem.DeniedPaths) != 2 || siem.DeniedPaths[0] != (PathCount{"/v1/admin", 3}) || siem.DeniedPaths[1] != (PathCount{"/v1/users", 1}) {
		t.Errorf("siem row %+v", siem)
	}
	if none := byKey["(no identity)/huntress"]; none.Calls != 1 || none.Statuses["401"] != 1 {
		t.Errorf("keyless row %+v", none)
	}
	e := r.Events
	if e.Rotations != 1 || e.Reloads != 1 || e.ReloadsRejected != 1 || e.AuditOutages != 1 || len(e.Notable) != 4 || e.ByName["started"] != 1 {
		t.Errorf("events %+v", e)
	}
	if !r.From.Equal(time.Date(2026, 7, 1, 9, 0, 0, 0, time.UTC)) || !r.To.Equal(time.Date(2026, 7, 3, 19, 0, 0, 0, time.UTC)) {
		t.Errorf("period %s to %s", r.From, r.To)
	}

	// Filters: a caller, an upstream, a time range.
	if f := buildReport(t, ReportFilter{Caller: "siem"}); len(f.Rows) != 2 || f.Events.Rotations != 0 {
		t.Errorf("--caller siem: %d rows, events %+v", len(f.Rows), f.Events)
	}
	if f := buildReport(t, ReportFilter{Upstream: "infocyte"}); len(f.Rows) != 1 || f.Rows[0].Calls != 4 {
		t.Errorf("--upstream infocyte: %+v", f.Rows)
	}
	since := time.Date(2026, 7, 2, 0, 0, 0, 0, time.UTC)
	if f := buildReport(t, ReportFilter{Since: since, Until: since.Add(24 * time.Hour), Caller: "soar"}); f.Rows[0].Calls != 12 {
		t.Errorf("one day of soar: %d calls, want 12", f.Rows[0].Calls)
	}
}

func TestReport_Formats(t *testing.T) {
	r := buildReport(t, ReportFilter{})
	render := func(format string) string {
		var b bytes.Buffer
		if err := r.Render(&b, format); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}

	var doc struct {
		From, To string
		Rows     []struct {
			Caller, Upstream   string
			Calls              int
			Outcomes, Statuses map[string]int
			CredentialVersions []int `json:"credential_versions"`
		}
		Events map[string]any
	}
	if err := json.Unmarshal([]byte(render(FormatJSON)), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.From == "" || len(doc.Rows) != 4 || doc.Rows[3].Caller != "soar" || doc.Rows[3].Calls != 30 ||
		len(doc.Rows[3].CredentialVersions) != 2 || doc.Events["rotations"] != float64(1) {
		t.Errorf("json: %+v", doc)
	}

	rows, err := csv.NewReader(strings.NewReader(render(FormatCSV))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 || strings.Join(rows[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("csv: %v", rows)
	}
	if got := rows[2]; got[0] != "siem" || got[1] != "huntress" || got[2] != "6" || got[11] != "4" || got[12] != "2" || got[16] != "/v1/admin (3); /v1/users (1)" {
		t.Errorf("csv siem row %v", got)
	}

	table := render(FormatTable)
	for _, want := range []string{"CALLER", "soar", "denied siem on huntress: /v1/admin (3), /v1/users (1)", "1 rotation(s), 1 reload(s) (1 rejected)", "1 audit outage(s)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	for _, l := range strings.Split(table, "\n") {
		if len(l) > 120 {
			t.Errorf("a table line of %d columns does not fit a terminal: %q", len(l), l)
		}
	}

	page := render(FormatHTML)
	root, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	var tableRows, polylines, refused int
	var external []string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "tr":
				tableRows++
			case "polyline":
				polylines++
			case "circle":
				refused++
			case "script":
				external = append(external, "script")
			}
			for _, a := range n.Attr {
				if (a.Key == "src" || a.Key == "href") && a.Val != "" {
					external = append(external, a.Val)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(root)
	if tableRows < 5 || polylines != 3 || refused == 0 || len(external) > 0 {
		t.Errorf("html: %d table rows, %d caller lines, %d refusal marks, external %v", tableRows, polylines, refused, external)
	}
	if !strings.Contains(page, "<svg") || !strings.Contains(page, "/v1/admin (3)") {
		t.Error("html lacks the chart or the denied paths")
	}
}
