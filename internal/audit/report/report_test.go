package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/keybroker/keybroker/internal/audit"
)

// knownTrail writes a trail of known content: over three days, soar makes
// 30 forwarded calls to huntress (credential versions 1 then 2), siem 10
// calls of which 4 denied (3 on /v1/admin, 1 on /v1/users) and 2 refused
// by the quota, one keyless call, a rotation, a reload, a rejected reload
// and an audit outage.
func knownTrail(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	t0 := time.Date(2026, 7, 1, 9, 0, 0, 0, time.UTC)
	call := func(at time.Time, r audit.Record) {
		r.Type, r.Time = audit.TypeCall, audit.Time(at)
		if err := w.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 30; i++ {
		v := 1
		if i >= 20 {
			v = 2
		}
		call(t0.Add(time.Duration(i)*2*time.Hour), audit.Record{Caller: "soar", CallerAuth: "key", Upstream: "huntress", Path: "/v1/agents",
			Status: 200, Outcome: audit.OutcomeForwarded, Policy: audit.PolicyAllowed, Credential: &audit.CredentialRef{Source: "vault", Ref: "secret/h", Version: v}})
	}
	at := t0.Add(26 * time.Hour)
	for i, p := range []string{"/v1/admin", "/v1/admin", "/v1/users", "/v1/admin"} {
		call(at.Add(time.Duration(i)*time.Minute), audit.Record{Caller: "siem", CallerAuth: "key", Upstream: "huntress", Path: p,
			Status: 403, Outcome: audit.OutcomeRefused, Policy: audit.PolicyDenied, Error: "caller_forbidden: ..."})
	}
	for i := 0; i < 2; i++ {
		call(at.Add(10*time.Minute), audit.Record{Caller: "siem", CallerAuth: "key", Upstream: "huntress", Path: "/v1/agents",
			Status: 429, Outcome: audit.OutcomeRefused, Policy: audit.PolicyAllowed, RateLimitedBy: "upstream", RateLimitWaitMS: 1500})
	}
	for i := 0; i < 4; i++ {
		call(at.Add(20*time.Minute), audit.Record{Caller: "siem", CallerAuth: "key", Upstream: "infocyte", Path: "/Agents",
			Status: 200, Outcome: audit.OutcomeForwarded, Policy: audit.PolicyAllowed, RateLimitWaitMS: 20, Credential: &audit.CredentialRef{Version: 7}})
	}
	call(at.Add(30*time.Minute), audit.Record{CallerAuth: "none", Upstream: "huntress", Path: "/v1/agents", Status: 401, Outcome: audit.OutcomeRefused})
	for _, ev := range []audit.Event{{Name: "credential_rotated", Upstream: "huntress", Version: 2, OldVersion: 1},
		{Name: "config_reloaded"}, {Name: "config_rejected", Detail: "upstreams[0].preset: unknown preset"},
		{Name: "audit_recovered", Detail: "after: no space left on device"}, {Name: "started"}} {
		if err := w.WriteEvent(ev, t0.Add(40*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func buildReport(t *testing.T, f Filter) *Report {
	t.Helper()
	r := New(f)
	if err := r.ReadTrail([]audit.Source{{Name: "trail", R: bytes.NewReader(knownTrail(t))}}); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReport_CountsAKnownTrail(t *testing.T) {
	r := buildReport(t, Filter{})
	if len(r.Rows) != 4 {
		t.Fatalf("%d rows: %+v", len(r.Rows), r.Rows)
	}
	byKey := map[string]Row{}
	for _, row := range r.Rows {
		byKey[row.Caller+"/"+row.Upstream] = row
	}
	soar := byKey["soar/huntress"]
	if soar.Calls != 30 || soar.Outcomes[audit.OutcomeForwarded] != 30 || soar.Statuses["200"] != 30 || versions(soar.CredentialVersions) != "1 2" {
		t.Errorf("soar row %+v", soar)
	}
	siem := byKey["siem/huntress"]
	if siem.Calls != 6 || siem.Denied != 4 || siem.RateLimited != 2 || siem.WaitMSMax != 1500 || siem.Outcomes[audit.OutcomeRefused] != 6 ||
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
	if f := buildReport(t, Filter{Caller: "siem"}); len(f.Rows) != 2 || f.Events.Rotations != 0 {
		t.Errorf("--caller siem: %d rows, events %+v", len(f.Rows), f.Events)
	}
	if f := buildReport(t, Filter{Upstream: "infocyte"}); len(f.Rows) != 1 || f.Rows[0].Calls != 4 {
		t.Errorf("--upstream infocyte: %+v", f.Rows)
	}
	since := time.Date(2026, 7, 2, 0, 0, 0, 0, time.UTC)
	if f := buildReport(t, Filter{Since: since, Until: since.Add(24 * time.Hour), Caller: "soar"}); f.Rows[0].Calls != 12 {
		t.Errorf("one day of soar: %d calls, want 12", f.Rows[0].Calls)
	}
}

func TestReport_Formats(t *testing.T) {
	r := buildReport(t, Filter{})
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
	if got := rows[2]; got[0] != "siem" || got[1] != "huntress" || got[2] != "6" || got[12] != "4" || got[13] != "2" || got[17] != "/v1/admin (3); /v1/users (1)" {
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

// shortTrail is n calls by one caller spread evenly over span, then a
// rotation from v1 to v2.
func shortTrail(t *testing.T, n int, span time.Duration) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		at := t0
		if n > 1 {
			at = t0.Add(span * time.Duration(i) / time.Duration(n-1))
		}
		r := audit.Record{Type: audit.TypeCall, Time: audit.Time(at), Caller: "soar-workflows", CallerAuth: "key", Upstream: "huntress",
			Path: "/v1/agents", Status: 200, Outcome: audit.OutcomeForwarded, Policy: audit.PolicyAllowed}
		if err := w.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteEvent(audit.Event{Name: "credential_rotated", Upstream: "huntress", Version: 2, OldVersion: 1}, t0.Add(span)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func render(t *testing.T, srcs []audit.Source, format string) (*Report, string) {
	t.Helper()
	r := New(Filter{})
	if err := r.ReadTrail(srcs); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := r.Render(&b, format); err != nil {
		t.Fatal(err)
	}
	return r, b.String()
}

// elements returns the elements of an HTML page by tag, and their text.
func elements(t *testing.T, page string) (map[string][]*html.Node, func(*html.Node) string) {
	t.Helper()
	root, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	byTag := map[string][]*html.Node{}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			byTag[n.Data] = append(byTag[n.Data], n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(root)
	var text func(n *html.Node) string
	text = func(n *html.Node) string {
		if n.Type == html.TextNode {
			return n.Data
		}
		var b strings.Builder
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			b.WriteString(text(c))
		}
		return b.String()
	}
	return byTag, text
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// TestReport_HTMLReadableAtAGlance: a trail whose calls all fall in one
// bucket still draws a visible mark; the y-axis starts at zero with ticks
// and names the bucket; the page names its files and their chain; a
// rotation says v1 → v2.
func TestReport_HTMLReadableAtAGlance(t *testing.T) {
	r, page := render(t, []audit.Source{{Name: "audit.log", R: bytes.NewReader(shortTrail(t, 3, 0))}}, FormatHTML)
	if r.BucketSeconds != 1 {
		t.Errorf("a one-instant trail has buckets of %ds, want 1s", r.BucketSeconds)
	}
	els, text := elements(t, page)
	var points, ticks []string
	for _, c := range els["circle"] {
		if attr(c, "class") == "point" {
			points = append(points, attr(c, "cx"))
		}
	}
	for _, tx := range els["text"] {
		switch attr(tx, "class") {
		case "ytick":
			ticks = append(ticks, text(tx))
		case "ylabel":
			if text(tx) != "calls per second" {
				t.Errorf("y-axis label %q", text(tx))
			}
		}
	}
	if len(points) != 1 || len(els["polyline"]) != 1 {
		t.Errorf("one bucket: %d point marks, %d lines; want a visible point", len(points), len(els["polyline"]))
	}
	if len(ticks) < 2 || ticks[0] != "0" || ticks[len(ticks)-1] != "3" {
		t.Errorf("y ticks %v: want 0 up to the peak, 3", ticks)
	}
	var scope, notable string
	for _, tb := range els["table"] {
		switch attr(tb, "id") {
		case "scope":
			scope = text(tb)
		case "notable":
			notable = text(tb)
		}
	}
	for _, want := range []string{"audit.log (4 records)", "intact, seq 1 to 4"} {
		if !strings.Contains(scope, want) {
			t.Errorf("the page's scope lacks %q: %q", want, scope)
		}
	}
	if !strings.Contains(notable, "credential_rotated") || !strings.Contains(notable, "v1 → v2") {
		t.Errorf("the rotation's detail: %q", notable)
	}
	if len(els["script"]) > 0 {
		t.Error("the page has a script")
	}
}

// TestReport_BucketFitsThePeriod: seconds for minutes, hours for days.
func TestReport_BucketFitsThePeriod(t *testing.T) {
	for _, tc := range []struct {
		span time.Duration
		want int64
		name string
	}{
		{5 * time.Minute, 5, "5 seconds"},
		{90 * time.Minute, 60, "minute"},
		{3 * 24 * time.Hour, 3600, "hour"},
		{400 * 24 * time.Hour, 7 * 86400, "week"},
	} {
		r, page := render(t, []audit.Source{{Name: "a", R: bytes.NewReader(shortTrail(t, 50, tc.span))}}, FormatHTML)
		n := r.To.Unix()/r.BucketSeconds - r.From.Unix()/r.BucketSeconds + 1
		if r.BucketSeconds != tc.want || n > maxBuckets || !strings.Contains(page, "calls per "+tc.name) {
			t.Errorf("%v: bucket %ds (%d buckets), want %ds named %q", tc.span, r.BucketSeconds, n, tc.want, tc.name)
		}
		var calls int
		for _, s := range r.buckets {
			for _, v := range s {
				calls += v[0]
			}
		}
		if calls != 50 {
			t.Errorf("%v: the buckets hold %d calls, want 50", tc.span, calls)
		}
	}
}

// TestReport_UnrelatedTrailsAreNotMerged: two trails that do not chain are
// reported as broken in every format, naming where.
func TestReport_UnrelatedTrailsAreNotMerged(t *testing.T) {
	srcs := func() []audit.Source {
		return []audit.Source{{Name: "one.log", R: bytes.NewReader(shortTrail(t, 3, time.Minute))},
			{Name: "two.log", R: bytes.NewReader(shortTrail(t, 2, time.Minute))}}
	}
	r, js := render(t, srcs(), FormatJSON)
	var doc struct {
		Chain struct {
			Intact bool
			Break  string
			Files  []FileCount
		}
		BucketSeconds int64 `json:"bucket_seconds"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Chain.Intact || !strings.HasPrefix(doc.Chain.Break, "two.log: line 1 (seq 1): seq 1 follows 4") || len(doc.Chain.Files) != 2 || r.Chain.Intact {
		t.Errorf("json chain: %+v", doc.Chain)
	}
	_, table := render(t, srcs(), FormatTable)
	if !strings.Contains(table, "chain: BROKEN at two.log: line 1") || !strings.Contains(table, "files: one.log (4 records), two.log (3 records)") {
		t.Errorf("table:\n%s", table)
	}
	_, page := render(t, srcs(), FormatHTML)
	els, text := elements(t, page)
	found := false
	for _, td := range els["td"] {
		if attr(td, "id") == "chain" {
			found = strings.Contains(text(td), "BROKEN at two.log") && strings.Contains(attr(td, "class"), "broken")
		}
	}
	if !found {
		t.Error("the HTML page does not say the chain is broken")
	}
	// One trail split in two files chains.
	whole := shortTrail(t, 6, time.Minute)
	cut := bytes.Index(whole, []byte("\n")) + 1
	r, _ = render(t, []audit.Source{{Name: "a.1", R: bytes.NewReader(whole[:cut])}, {Name: "a", R: bytes.NewReader(whole[cut:])}}, FormatJSON)
	if !r.Chain.Intact || r.Chain.Records != 7 {
		t.Errorf("a rotated trail: %+v", r.Chain)
	}
}

// TestReport_EscapesWhatCallersControl: a path a caller chose cannot
// become markup in the auditor's page.
func TestReport_EscapesWhatCallersControl(t *testing.T) {
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	r := audit.Record{Type: audit.TypeCall, Time: audit.Time(time.Now()), Caller: "siem", CallerAuth: "key", Upstream: "huntress",
		Path: `/v1/"><script>alert(1)</script>`, Status: 403, Outcome: audit.OutcomeRefused, Policy: audit.PolicyDenied}
	if err := w.Write(&r); err != nil {
		t.Fatal(err)
	}
	_, page := render(t, []audit.Source{{Name: "a", R: &buf}}, FormatHTML)
	els, _ := elements(t, page)
	if len(els["script"]) > 0 || !strings.Contains(page, "&lt;script&gt;") {
		t.Error("a caller-controlled path became markup")
	}
}

// TestReport_SumsTokensIssued: token_issued events with a count (one per
// caller and upstream per interval) are summed, an event without one
// counts one, and a refused token request is not an issued token.
func TestReport_SumsTokensIssued(t *testing.T) {
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, ev := range []audit.Event{
		{Name: "token_issued", Caller: "soar", Upstream: "huntress-sat", Outcome: "issued", Count: 41},
		{Name: "token_issued", Caller: "siem", Upstream: "huntress-sat", Outcome: "issued"},
		{Name: "token_issued", Upstream: "huntress-sat", Outcome: "invalid_client"},
	} {
		if err := w.WriteEvent(ev, at); err != nil {
			t.Fatal(err)
		}
	}
	r, text := render(t, []audit.Source{{Name: "audit.log", R: bytes.NewReader(buf.Bytes())}}, FormatTable)
	if r.Events.TokensIssued != 42 || !strings.Contains(text, "42 keybroker token(s) issued") {
		t.Errorf("tokens issued %d, table:\n%s\nwant 42", r.Events.TokensIssued, text)
	}
	// In every format: the CSV by caller, the JSON by caller and in all.
	_, csvText := render(t, []audit.Source{{Name: "audit.log", R: bytes.NewReader(buf.Bytes())}}, FormatCSV)
	rows, err := csv.NewReader(strings.NewReader(csvText)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := slices.Index(rows[0], "tokens_issued")
	got := map[string]string{}
	for _, row := range rows[1:] {
		got[row[0]] = row[col]
	}
	if col < 0 || got["soar"] != "41" || got["siem"] != "1" {
		t.Errorf("csv tokens_issued by caller: %v\n%s", got, csvText)
	}
	_, js := render(t, []audit.Source{{Name: "audit.log", R: bytes.NewReader(buf.Bytes())}}, FormatJSON)
	if !strings.Contains(js, `"tokens_issued": 41`) || !strings.Contains(js, `"tokens_issued": 42`) {
		t.Errorf("json:\n%s", js)
	}
	_, page := render(t, []audit.Source{{Name: "audit.log", R: bytes.NewReader(buf.Bytes())}}, FormatHTML)
	if !strings.Contains(page, "keybroker tokens issued</th><td>42") {
		t.Errorf("html lacks the tokens issued")
	}
}

// TestReport_ListsInterruptedCalls: begin lines are not calls; a begin
// ended by its record is nothing more; one closed by call_interrupted, and
// one still open at the end of the files, are listed (in seq order) in
// every format, the HTML page showing them before the table of calls, and
// counted in their row beside the failed calls.
func TestReport_ListsInterruptedCalls(t *testing.T) {
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	begin := func(id, path string) uint64 {
		rec := &audit.Record{Type: audit.TypeCall, Time: audit.Time(at), RequestID: id, Caller: "soar", CallerAuth: "key",
			Method: "POST", Upstream: "huntress", Path: path, Policy: audit.PolicyAllowed}
		seq, err := w.Begin(rec)
		if err != nil {
			t.Fatal(err)
		}
		if id == "ended" {
			rec.BeginSeq, rec.Status, rec.Outcome = seq, 200, audit.OutcomeForwarded
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
		}
		return seq
	}
	begin("ended", "/v1/agents/1/isolation")
	killed := begin("killed", "/v1/agents/7/isolation")
	if err := w.WriteEvent(audit.Event{Name: audit.EventCallInterrupted, BeginSeq: killed, RequestID: "killed", Caller: "soar",
		Upstream: "huntress", Method: "POST", Path: "/v1/agents/7/isolation", Begun: "2026-12-07T10:00:00.000Z"}, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	open := begin("still-open", "/v1/agents/9/isolation")
	srcs := func() []audit.Source { return []audit.Source{{Name: "audit.log", R: bytes.NewReader(buf.Bytes())}} }

	r, _ := render(t, srcs(), FormatJSON)
	if len(r.Rows) != 1 || r.Rows[0].Calls != 1 || r.Rows[0].Interrupted != 2 {
		t.Fatalf("rows %+v; want one call (begins are not calls) and two interrupted", r.Rows)
	}
	if len(r.Interrupted) != 2 || r.Interrupted[0].BeginSeq != killed || r.Interrupted[0].State != StateInterrupted ||
		r.Interrupted[1].BeginSeq != open || r.Interrupted[1].State != StateOpen || r.Interrupted[1].RequestID != "still-open" {
		t.Fatalf("interrupted %+v", r.Interrupted)
	}
	_, js := render(t, srcs(), FormatJSON)
	_, table := render(t, srcs(), FormatTable)
	_, csvText := render(t, srcs(), FormatCSV)
	_, page := render(t, srcs(), FormatHTML)
	for format, text := range map[string]string{"json": js, "table": table, "csv": csvText, "html": page} {
		for _, id := range []string{"killed", "still-open"} {
			if !strings.Contains(text, id) {
				t.Errorf("%s report does not list %s:\n%s", format, id, text)
			}
		}
	}
	if !strings.Contains(table, "interrupted calls (left for the vendor, no end record: the vendor may have acted on them): 2") {
		t.Errorf("table:\n%s", table)
	}
	if i, j := strings.Index(page, `id="interrupted"`), strings.Index(page, `id="rows"`); i < 0 || i > j {
		t.Errorf("HTML: the interrupted calls do not come before the calls (%d, %d)", i, j)
	}
}

// TestReport_TableByCallerAndOperation: calls counted by caller and
// operation, admin and respond first, undocumented calls on a catalogued
// upstream named by method and path, none on an upstream without a
// catalogue; in every format.
func TestReport_TableByCallerAndOperation(t *testing.T) {
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	call := func(caller, upstream, method, path, op, tier, outcome string) {
		if err := w.Write(&audit.Record{Type: audit.TypeCall, Time: audit.Time(at), Caller: caller, CallerAuth: "key", Method: method,
			Upstream: upstream, Path: path, Operation: op, Tier: tier, Outcome: outcome, Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		call("siem", "huntress", "GET", "/v1/agents", "list_agents", "read", audit.OutcomeForwarded)
	}
	call("soar", "huntress", "POST", "/v1/agents/7/isolation", "isolate_agent", "respond", audit.OutcomeForwarded)
	call("soar", "huntress", "DELETE", "/v1/agents/7", "uninstall_agent", "admin", audit.OutcomeRefused)
	call("soar", "huntress", "GET", "/v1/undocumented/9", "", "", audit.OutcomeForwarded)
	call("soar", "rogue", "GET", "/items", "", "", audit.OutcomeForwarded) // no catalogue there
	srcs := func() []audit.Source { return []audit.Source{{Name: "audit.log", R: bytes.NewReader(buf.Bytes())}} }

	r, _ := render(t, srcs(), FormatJSON)
	var got []string
	for _, o := range r.Operations {
		got = append(got, fmt.Sprintf("%s %s %s %s %d/%d/%d", o.Caller, o.Upstream, o.Label(), o.Tier, o.Calls, o.Forwarded, o.Refused))
	}
	want := []string{
		"soar huntress uninstall_agent admin 1/0/1",
		"soar huntress isolate_agent respond 1/1/0",
		"siem huntress list_agents read 3/3/0",
		"soar huntress (undocumented) GET /v1/undocumented/9  1/1/0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("operations:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	_, table := render(t, srcs(), FormatTable)
	_, csvText := render(t, srcs(), FormatCSV)
	_, page := render(t, srcs(), FormatHTML)
	for format, text := range map[string]string{"table": table, "csv": csvText, "html": page} {
		for _, s := range []string{"uninstall_agent", "isolate_agent", "list_agents", "(undocumented) GET /v1/undocumented/9"} {
			if !strings.Contains(text, s) {
				t.Errorf("%s report lacks %q", format, s)
			}
		}
	}
	if i, j := strings.Index(table, "uninstall_agent"), strings.Index(table, "list_agents"); i < 0 || i > j {
		t.Errorf("table: admin not before read:\n%s", table)
	}
}
