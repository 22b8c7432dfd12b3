package audit

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
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
	return r.From.UTC().Format("2006-01-02 15:04") + " to " + r.To.UTC().Format("2006-01-02 15:04") + " UTC"
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
	fmt.Fprintf(w, "keybroker audit report, %s\n\n", r.period())
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALLER\tUPSTREAM\tCALLS\tFORWARDED\tREFUSED\tFAILED\tDENIED\t429\tMAX WAIT\tKEY VERSIONS")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.0fms\t%s\n", row.Caller, orNone(row.Upstream), row.Calls,
			row.Outcomes[OutcomeForwarded], row.Outcomes[OutcomeRefused], row.Outcomes[OutcomeFailed]+row.Outcomes[OutcomeCancelled],
			row.Denied, row.RateLimited, row.WaitMSMax, versions(row.CredentialVersions))
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
	e := r.Events
	fmt.Fprintf(w, "\n\nevents: %d rotation(s), %d reload(s) (%d rejected), %d refresh failure(s), %d stale-serving,\n        %d audit outage(s), %d signed checkpoint(s)\n",
		e.Rotations, e.Reloads, e.ReloadsRejected, e.RefreshFailures, e.StaleServing, e.AuditOutages, e.Checkpoints)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// csvHeader is the CSV's first line.
var csvHeader = []string{"caller", "upstream", "calls", "forwarded", "refused", "failed", "cancelled",
	"status_2xx", "status_3xx", "status_4xx", "status_5xx", "denied", "ratelimit_refusals",
	"ratelimit_wait_ms_total", "ratelimit_wait_ms_max", "credential_versions", "top_denied_paths"}

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
			strconv.Itoa(row.Outcomes[OutcomeForwarded]), strconv.Itoa(row.Outcomes[OutcomeRefused]),
			strconv.Itoa(row.Outcomes[OutcomeFailed]), strconv.Itoa(row.Outcomes[OutcomeCancelled]),
			strconv.Itoa(c2), strconv.Itoa(c3), strconv.Itoa(c4), strconv.Itoa(c5),
			strconv.Itoa(row.Denied), strconv.Itoa(row.RateLimited),
			strconv.FormatFloat(row.WaitMSTotal, 'f', 1, 64), strconv.FormatFloat(row.WaitMSMax, 'f', 1, 64),
			versions(row.CredentialVersions), strings.Join(denied, "; ")})
	}
	cw.Flush()
	return cw.Error()
}

// html is one self-contained page: no external asset, no script. The
// chart is inline SVG: calls per time bucket, one line per caller, with
// the buckets that held refusals marked.
func (r *Report) html(w io.Writer) error {
	esc := html.EscapeString
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>keybroker audit report</title><style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:right}th{background:#eee}td.l,th.l{text-align:left}
.refused{fill:#c00}.legend span{display:inline-block;margin-right:1.5em}
</style></head><body>`)
	fmt.Fprintf(&b, "<h1>keybroker audit report</h1><p>Period: %s</p>", esc(r.period()))
	b.WriteString(`<table id="rows"><thead><tr><th class="l">Caller</th><th class="l">Upstream</th><th>Calls</th><th>Forwarded</th><th>Refused</th><th>Failed</th><th>Denied</th><th>Rate-limited</th><th>Max wait (ms)</th><th class="l">Key versions</th><th class="l">Top denied paths</th></tr></thead><tbody>`)
	for _, row := range r.Rows {
		var denied []string
		for _, p := range row.DeniedPaths {
			denied = append(denied, fmt.Sprintf("%s (%d)", p.Path, p.Count))
		}
		fmt.Fprintf(&b, `<tr><td class="l">%s</td><td class="l">%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%.0f</td><td class="l">%s</td><td class="l">%s</td></tr>`,
			esc(row.Caller), esc(row.Upstream), row.Calls, row.Outcomes[OutcomeForwarded], row.Outcomes[OutcomeRefused],
			row.Outcomes[OutcomeFailed]+row.Outcomes[OutcomeCancelled], row.Denied, row.RateLimited, row.WaitMSMax,
			esc(versions(row.CredentialVersions)), esc(strings.Join(denied, "; ")))
	}
	b.WriteString("</tbody></table>")
	b.WriteString("<h2>Calls over time</h2>")
	b.WriteString(r.svg())
	e := r.Events
	fmt.Fprintf(&b, `<h2>Lifecycle events</h2><table id="events"><tr><th class="l">Rotations</th><td>%d</td></tr><tr><th class="l">Reloads (rejected)</th><td>%d (%d)</td></tr><tr><th class="l">Refresh failures</th><td>%d</td></tr><tr><th class="l">Stale serving</th><td>%d</td></tr><tr><th class="l">Audit outages</th><td>%d</td></tr><tr><th class="l">Signed checkpoints</th><td>%d</td></tr></table>`,
		e.Rotations, e.Reloads, e.ReloadsRejected, e.RefreshFailures, e.StaleServing, e.AuditOutages, e.Checkpoints)
	if len(e.Notable) > 0 {
		b.WriteString(`<table id="notable"><tr><th class="l">Time (UTC)</th><th class="l">Event</th><th class="l">Upstream</th><th class="l">Detail</th></tr>`)
		for _, n := range e.Notable {
			fmt.Fprintf(&b, `<tr><td class="l">%s</td><td class="l">%s</td><td class="l">%s</td><td class="l">%s</td></tr>`,
				n.Time.UTC().Format("2006-01-02 15:04:05"), esc(n.Name), esc(n.Upstream), esc(n.Detail))
		}
		b.WriteString("</table>")
	}
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"}

// svg draws calls per bucket (hours merged so that there are at most 120
// buckets) as one polyline per caller; a red dot marks a bucket with a
// refusal.
func (r *Report) svg() string {
	const wdt, hgt, pad = 800, 260, 40
	var first, last int64 = 1 << 62, 0
	for _, h := range r.hours {
		for hour := range h {
			first, last = min(first, hour), max(last, hour)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="calls over time per caller">`, wdt, hgt+40, wdt, hgt+40)
	if last == 0 {
		b.WriteString(`<text x="20" y="40">no calls</text></svg>`)
		return b.String()
	}
	span := last - first + 1
	per := (span + 119) / 120 // hours per bucket
	nb := int((span + per - 1) / per)
	callers := make([]string, 0, len(r.hours))
	for c := range r.hours {
		callers = append(callers, c)
	}
	sort.Strings(callers)
	series := map[string][][2]int{}
	peak := 1
	for _, c := range callers {
		s := make([][2]int, nb)
		for hour, n := range r.hours[c] {
			i := int((hour - first) / per)
			s[i][0] += n[0]
			s[i][1] += n[1]
			peak = max(peak, s[i][0])
		}
		series[c] = s
	}
	x := func(i int) float64 { return pad + float64(i)*float64(wdt-2*pad)/float64(max(nb-1, 1)) }
	y := func(n int) float64 { return float64(hgt) - float64(n)*float64(hgt-pad)/float64(peak) }
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, pad, hgt, wdt-pad, hgt, pad, pad, pad, hgt)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11">%d</text>`, 4, pad+4, peak)
	start := time.Unix(first*3600, 0).UTC()
	end := time.Unix((last+1)*3600, 0).UTC()
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11">%s</text><text x="%d" y="%d" font-size="11" text-anchor="end">%s</text>`,
		pad, hgt+15, start.Format("2006-01-02 15:04"), wdt-pad, hgt+15, end.Format("2006-01-02 15:04"))
	for ci, c := range callers {
		color := palette[ci%len(palette)]
		var pts []string
		for i, v := range series[c] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v[0])))
		}
		fmt.Fprintf(&b, `<polyline class="caller" data-caller="%s" fill="none" stroke="%s" stroke-width="2" points="%s"/>`,
			html.EscapeString(c), color, strings.Join(pts, " "))
		for i, v := range series[c] {
			if v[1] > 0 {
				fmt.Fprintf(&b, `<circle class="refused" cx="%.1f" cy="%.1f" r="4"><title>%s: %d refused</title></circle>`, x(i), y(v[0]), html.EscapeString(c), v[1])
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" fill="%s">%s</text>`, pad+ci*150, hgt+35, color, html.EscapeString(c))
	}
	b.WriteString(`<text x="700" y="295" font-size="12" fill="#c00">● refused</text></svg>`)
	return b.String()
}
