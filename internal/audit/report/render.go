package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
)

// Report formats.
const (
	FormatTable = "table"
	FormatCSV   = "csv"
	FormatJSON  = "json"
	FormatHTML  = "html"
)

// Render writes the report in format.
func (r *Report) Render(w io.Writer, format string) error {
	switch format {
	case FormatTable, "":
		return r.table(w)
	case FormatCSV:
		return r.csv(w)
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case FormatHTML:
		return r.html(w)
	}
	return fmt.Errorf("unknown format %q: table, csv, json or html", format)
}

func (r *Report) period() string {
	if r.From.IsZero() {
		return "no records"
	}
	return r.From.UTC().Format("2006-01-02 15:04:05") + " to " + r.To.UTC().Format("2006-01-02 15:04:05") + " UTC"
}

// files names the files read and their record counts.
func (r *Report) files() string {
	var fs []string
	for _, f := range r.Chain.Files {
		fs = append(fs, fmt.Sprintf("%s (%d records)", f.Name, f.Records))
	}
	return strings.Join(fs, ", ")
}

// chainStatus says in one line whether the files chain.
func (r *Report) chainStatus() string {
	if !r.Chain.Intact {
		return "BROKEN at " + r.Chain.Break
	}
	if r.Chain.Records == 0 {
		return "no records"
	}
	sg := r.Chain.Signatures
	switch {
	case sg == nil:
		return fmt.Sprintf("intact, seq %d to %d (hash chain only: give --public-key to check the signatures)", r.Chain.FirstSeq, r.Chain.LastSeq)
	case !sg.Valid:
		return fmt.Sprintf("intact, seq %d to %d; signatures NOT valid: %s", r.Chain.FirstSeq, r.Chain.LastSeq, sg.Problem)
	case sg.Uncovered > 0:
		return fmt.Sprintf("intact, seq %d to %d; %d checkpoint(s), every signature valid, records up to seq %d signed (%d after it not yet)",
			r.Chain.FirstSeq, r.Chain.LastSeq, sg.Checkpoints, sg.Covered, sg.Uncovered)
	}
	return fmt.Sprintf("intact, seq %d to %d; %d checkpoint(s), every signature valid, every record signed", r.Chain.FirstSeq, r.Chain.LastSeq, sg.Checkpoints)
}

// bucketName is the chart's bucket size in words ("5 seconds", "1 hour").
func bucketName(sec int64) string {
	for _, u := range []struct {
		s    int64
		name string
	}{{7 * 86400, "week"}, {86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}} {
		if sec%u.s == 0 {
			if n := sec / u.s; n != 1 {
				return fmt.Sprintf("%d %ss", n, u.name)
			}
			return u.name
		}
	}
	return fmt.Sprintf("%d seconds", sec)
}

func versions(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, " ")
}

func statusClasses(st map[string]int) (c2, c3, c4, c5 int) {
	for k, n := range st {
		switch {
		case strings.HasPrefix(k, "2"):
			c2 += n
		case strings.HasPrefix(k, "3"):
			c3 += n
		case strings.HasPrefix(k, "4"):
			c4 += n
		case strings.HasPrefix(k, "5"):
			c5 += n
		}
	}
	return
}

// table fits a terminal: one line per caller and upstream, then the
// refused paths and the lifecycle events.
func (r *Report) table(w io.Writer) error {
	fmt.Fprintf(w, "keybroker audit report, %s\nfiles: %s\nchain: %s\n\n", r.period(), r.files(), r.chainStatus())
	if len(r.Interrupted) > 0 {
		fmt.Fprintf(w, "interrupted calls (left for the vendor, no end record: the vendor may have acted on them): %d\n", len(r.Interrupted)+r.InterruptedUnlisted)
		for _, c := range r.Interrupted {
			fmt.Fprintf(w, "  %s\n", c.line())
		}
		if r.InterruptedUnlisted > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", r.InterruptedUnlisted)
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALLER\tUPSTREAM\tCALLS\tFORWARDED\tREFUSED\tFAILED\tINTERRUPTED\tDENIED\t429\tMAX WAIT\tKEY VERSIONS")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.0fms\t%s\n", row.Caller, orNone(row.Upstream), row.Calls,
			row.Outcomes[audit.OutcomeForwarded], row.Outcomes[audit.OutcomeRefused], row.Outcomes[audit.OutcomeFailed]+row.Outcomes[audit.OutcomeCancelled],
			row.Interrupted, row.Denied, row.RateLimited, row.WaitMSMax, versions(row.CredentialVersions))
	}
	tw.Flush()
	for _, row := range r.Rows {
		if len(row.DeniedPaths) > 0 {
			var ps []string
			for _, p := range row.DeniedPaths {
				ps = append(ps, fmt.Sprintf("%s (%d)", p.Path, p.Count))
			}
			fmt.Fprintf(w, "\ndenied %s on %s: %s", row.Caller, row.Upstream, strings.Join(ps, ", "))
		}
	}
	if len(r.Replicas) > 0 {
		fmt.Fprint(w, "\n\nreplicas:\n")
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REPLICA\tFILES\tRECORDS\tCALLS")
		for _, rc := range r.Replicas {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", orNone(rc.Replica), rc.Files, rc.Records, rc.Calls)
		}
		tw.Flush()
	}
	if len(r.Operations) > 0 {
		fmt.Fprint(w, "\n\noperations (admin and respond first; undocumented calls by method and path):\n")
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CALLER\tUPSTREAM\tOPERATION\tTIER\tCALLS\tFORWARDED\tREFUSED")
		for _, o := range r.Operations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\n", o.Caller, orNone(o.Upstream), o.Label(), orNone(o.Tier), o.Calls, o.Forwarded, o.Refused)
		}
		tw.Flush()
	}
	e := r.Events
	fmt.Fprintf(w, "\n\nevents: %d rotation(s), %d reload(s) (%d rejected), %d refresh failure(s), %d stale-serving,\n        %d audit outage(s), %d signed checkpoint(s), %d keybroker token(s) issued\n",
		e.Rotations, e.Reloads, e.ReloadsRejected, e.RefreshFailures, e.StaleServing, e.AuditOutages, e.Checkpoints, e.TokensIssued)
	return nil
}

// label is the operation's name, or an undocumented call's method and path.
func (o OperationRow) Label() string {
	if o.Undocumented {
		return "(undocumented) " + o.Operation
	}
	return o.Operation
}

// operationsOf lists a caller's operations on an upstream, for the CSV's
// operations column.
func (r *Report) operationsOf(caller, upstream string) string {
	var s []string
	for _, o := range r.Operations {
		if o.Caller == caller && o.Upstream == upstream {
			s = append(s, fmt.Sprintf("%s (%s) %d", o.Label(), orNone(o.Tier), o.Calls))
		}
	}
	return strings.Join(s, "; ")
}

// line is an interrupted call in one line.
func (c Interrupted) line() string {
	return fmt.Sprintf("%s  %s  seq %d  %s  %s %s %s  request %s", c.Begun.UTC().Format("2006-01-02 15:04:05"), c.State, c.BeginSeq,
		c.Caller, c.Method, orNone(c.Upstream), c.Path, c.RequestID)
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// csvHeader is the CSV's first line.
var csvHeader = []string{"caller", "upstream", "calls", "forwarded", "refused", "failed", "cancelled", "interrupted",
	"status_2xx", "status_3xx", "status_4xx", "status_5xx", "denied", "ratelimit_refusals",
	"ratelimit_wait_ms_total", "ratelimit_wait_ms_max", "credential_versions", "top_denied_paths", "interrupted_calls", "operations", "tokens_issued"}

// interruptedOf lists the interrupted calls of a caller on an upstream,
// for the CSV's last column.
func (r *Report) interruptedOf(caller, upstream string) string {
	var s []string
	for _, c := range r.Interrupted {
		if c.Caller == caller && c.Upstream == upstream {
			s = append(s, c.line())
		}
	}
	return strings.Join(s, "; ")
}

func (r *Report) csv(w io.Writer) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(csvHeader)
	for _, row := range r.Rows {
		c2, c3, c4, c5 := statusClasses(row.Statuses)
		var denied []string
		for _, p := range row.DeniedPaths {
			denied = append(denied, fmt.Sprintf("%s (%d)", p.Path, p.Count))
		}
		_ = cw.Write([]string{row.Caller, row.Upstream, strconv.Itoa(row.Calls),
			strconv.Itoa(row.Outcomes[audit.OutcomeForwarded]), strconv.Itoa(row.Outcomes[audit.OutcomeRefused]),
			strconv.Itoa(row.Outcomes[audit.OutcomeFailed]), strconv.Itoa(row.Outcomes[audit.OutcomeCancelled]), strconv.Itoa(row.Interrupted),
			strconv.Itoa(c2), strconv.Itoa(c3), strconv.Itoa(c4), strconv.Itoa(c5),
			strconv.Itoa(row.Denied), strconv.Itoa(row.RateLimited),
			strconv.FormatFloat(row.WaitMSTotal, 'f', 1, 64), strconv.FormatFloat(row.WaitMSMax, 'f', 1, 64),
			versions(row.CredentialVersions), strings.Join(denied, "; "), r.interruptedOf(row.Caller, row.Upstream), r.operationsOf(row.Caller, row.Upstream),
			strconv.FormatInt(row.TokensIssued, 10)})
	}
	cw.Flush()
	return cw.Error()
}

// html is one self-contained page: no external asset, no script, rendered
// by html/template, which escapes every value for where it stands (text,
// attribute). The chart is inline SVG (chart.go).
func (r *Report) html(w io.Writer) error {
	return page.Execute(w, struct {
		*Report
		Period, Files, ChainStatus string
		Plot                       plot
	}{r, r.period(), r.files(), r.chainStatus(), r.plot()})
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"outcome": func(row Row, names ...string) int {
		n := 0
		for _, o := range names {
			n += row.Outcomes[o]
		}
		return n
	},
	"versions": versions,
	"denied": func(ps []PathCount) string {
		var s []string
		for _, p := range ps {
			s = append(s, fmt.Sprintf("%s (%d)", p.Path, p.Count))
		}
		return strings.Join(s, "; ")
	},
	"utc": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	"f1":  func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>keybroker audit report</title><style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:right}th{background:#eee}td.l,th.l{text-align:left}
.broken{color:#c00;font-weight:bold}.intact{color:#070}
</style></head><body>
<h1>keybroker audit report</h1>
<table id="scope">
<tr><th class="l">Period</th><td class="l">{{.Period}}</td></tr>
<tr><th class="l">Files</th><td class="l">{{.Files}}</td></tr>
<tr><th class="l">Chain</th><td class="l {{if and .Chain.Intact (or (not .Chain.Signatures) .Chain.Signatures.Valid)}}intact{{else}}broken{{end}}" id="chain">{{.ChainStatus}}</td></tr>
</table>
{{- if .Interrupted}}
<h2 class="broken">Interrupted calls: the vendor may have acted on them</h2>
<p>These calls left for the vendor and have no end record: keybroker was stopped, or its disk filled, while they were at the vendor ("interrupted"), or they were still at the vendor when the trail was read ("open"). Check each with the vendor. Calls that ended in "failed" are counted beside them below.</p>
<table id="interrupted"><thead><tr><th class="l">Began (UTC)</th><th class="l">State</th><th>Begin seq</th><th class="l">Caller</th><th class="l">Upstream</th><th class="l">Method</th><th class="l">Path</th><th class="l">Request id</th></tr></thead><tbody>
{{- range .Interrupted}}
<tr><td class="l">{{utc .Begun}}</td><td class="l">{{.State}}</td><td>{{.BeginSeq}}</td><td class="l">{{.Caller}}</td><td class="l">{{.Upstream}}</td><td class="l">{{.Method}}</td><td class="l">{{.Path}}</td><td class="l">{{.RequestID}}</td></tr>
{{- end}}
{{- if .InterruptedUnlisted}}<tr><td class="l" colspan="8">… and {{.InterruptedUnlisted}} more</td></tr>{{end}}
</tbody></table>
{{- end}}
<table id="rows"><thead><tr><th class="l">Caller</th><th class="l">Upstream</th><th>Calls</th><th>Forwarded</th><th>Refused</th><th>Failed</th><th>Interrupted</th><th>Denied</th><th>Rate-limited</th><th>Max wait (ms)</th><th class="l">Credential versions</th><th class="l">Top denied paths</th></tr></thead><tbody>
{{- range .Rows}}
<tr><td class="l">{{.Caller}}</td><td class="l">{{.Upstream}}</td><td>{{.Calls}}</td><td>{{outcome . "forwarded"}}</td><td>{{outcome . "refused"}}</td><td>{{outcome . "failed" "cancelled"}}</td><td>{{.Interrupted}}</td><td>{{.Denied}}</td><td>{{.RateLimited}}</td><td>{{printf "%.0f" .WaitMSMax}}</td><td class="l">{{versions .CredentialVersions}}</td><td class="l">{{denied .DeniedPaths}}</td></tr>
{{- end}}
</tbody></table>
{{- if .Operations}}
<h2>Operations</h2>
<p>Calls by caller and the vendor's operation, the riskiest tiers first; an undocumented call (no operation of the vendor's catalogue) is named by its method and path.</p>
<table id="operations"><thead><tr><th class="l">Caller</th><th class="l">Upstream</th><th class="l">Operation</th><th class="l">Tier</th><th>Calls</th><th>Forwarded</th><th>Refused</th></tr></thead><tbody>
{{- range .Operations}}
<tr><td class="l">{{.Caller}}</td><td class="l">{{.Upstream}}</td><td class="l">{{.Label}}</td><td class="l">{{.Tier}}</td><td>{{.Calls}}</td><td>{{.Forwarded}}</td><td>{{.Refused}}</td></tr>
{{- end}}
</tbody></table>
{{- end}}
<h2>Calls over time</h2>
{{with .Plot}}<svg xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="calls per {{.Bucket}} per caller">
{{- if not .Series}}<text x="20" y="40">no calls</text>
{{- else}}
<line class="axis" x1="{{.Left}}" y1="{{.Bottom}}" x2="{{.Right}}" y2="{{.Bottom}}" stroke="#888"/>
<line class="axis" x1="{{.Left}}" y1="{{.Top}}" x2="{{.Left}}" y2="{{.Bottom}}" stroke="#888"/>
{{- range .YTicks}}
<line x1="{{$.Plot.Left}}" y1="{{f1 .Y}}" x2="{{$.Plot.Right}}" y2="{{f1 .Y}}" stroke="#ddd"/><text class="ytick" x="{{$.Plot.TickX}}" y="{{f1 .Y}}" font-size="11" text-anchor="end" dominant-baseline="middle">{{.Label}}</text>
{{- end}}
<text class="ylabel" x="12" y="{{.MidY}}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {{.MidY}})">calls per {{.Bucket}}</text>
<text class="xtick" x="{{.Left}}" y="{{.XTickY}}" font-size="11">{{.Start}}</text>
<text class="xtick" x="{{.Right}}" y="{{.XTickY}}" font-size="11" text-anchor="end">{{.End}}</text>
<text class="xlabel" x="{{.MidX}}" y="{{.XTickY}}" font-size="11" text-anchor="middle">UTC, one point per {{.Bucket}}</text>
{{- range .Series}}
<polyline class="caller" data-caller="{{.Caller}}" fill="none" stroke="{{.Color}}" stroke-width="2" points="{{.Points}}"/>
{{- $s := .}}{{range .Marks}}
<circle class="point" cx="{{f1 .X}}" cy="{{f1 .Y}}" r="3.5" fill="{{$s.Color}}"><title>{{$s.Caller}}: {{.Calls}} call(s)</title></circle>
{{- if .Refused}}<circle class="refused" cx="{{f1 .X}}" cy="{{f1 .Y}}" r="6" fill="none" stroke="#c00" stroke-width="2"><title>{{$s.Caller}}: {{.Refused}} refused</title></circle>{{end}}
{{- end}}
<text x="{{.LegendX}}" y="{{$.Plot.LegendY}}" font-size="12" fill="{{.Color}}">{{.Caller}}</text>
{{- end}}
<text x="{{.Right}}" y="{{.LegendY}}" font-size="12" fill="#c00" text-anchor="end">○ refused</text>
{{- end}}
</svg>{{end}}
<h2>Lifecycle events</h2>
<table id="events">
<tr><th class="l">Rotations</th><td>{{.Events.Rotations}}</td></tr>
<tr><th class="l">Reloads (rejected)</th><td>{{.Events.Reloads}} ({{.Events.ReloadsRejected}})</td></tr>
<tr><th class="l">Refresh failures</th><td>{{.Events.RefreshFailures}}</td></tr>
<tr><th class="l">Stale serving</th><td>{{.Events.StaleServing}}</td></tr>
<tr><th class="l">Audit outages</th><td>{{.Events.AuditOutages}}</td></tr>
<tr><th class="l">Signed checkpoints</th><td>{{.Events.Checkpoints}}</td></tr>
<tr><th class="l">keybroker tokens issued</th><td>{{.Events.TokensIssued}}</td></tr>
</table>
{{- if .Replicas}}
<h2>Replicas</h2>
<table id="replicas"><tr><th class="l">Replica</th><th>Files</th><th>Records</th><th>Calls</th></tr>
{{- range .Replicas}}
<tr><td class="l">{{.Replica}}</td><td>{{.Files}}</td><td>{{.Records}}</td><td>{{.Calls}}</td></tr>
{{- end}}
</table>
{{- end}}
{{- if .Events.Notable}}
<table id="notable"><tr><th class="l">Time (UTC)</th><th class="l">Replica</th><th class="l">Event</th><th class="l">Upstream</th><th class="l">Detail</th></tr>
{{- range .Events.Notable}}
<tr><td class="l">{{utc .Time}}</td><td class="l">{{.Replica}}</td><td class="l">{{.Name}}</td><td class="l">{{.Upstream}}</td><td class="l">{{.Detail}}</td></tr>
{{- end}}
</table>
{{- end}}
</body></html>
`))
