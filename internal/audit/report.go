package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"
)

// ReportFilter selects the records a report counts; zero fields select all.
type ReportFilter struct {
	Since, Until     time.Time
	Caller, Upstream string
}

// Report is what an auditor asks of a trail: per caller and upstream, the
// calls, how they ended, what was refused, and the lifecycle events. It is
// built by streaming the trail (Add, one line at a time), so a year of
// records needs memory only for the rows, not the records.
type Report struct {
	From   time.Time   `json:"from"`
	To     time.Time   `json:"to"`
	Rows   []ReportRow `json:"rows"`
	Events EventCounts `json:"events"`

	filter ReportFilter
	rows   map[[2]string]*ReportRow
	denied map[[2]string]map[string]int
	// hours counts calls and refusals per caller per hour, for the chart.
	hours map[string]map[int64]*[2]int
}

// ReportRow is one caller's use of one upstream.
type ReportRow struct {
	Caller             string           `json:"caller"`
	Upstream           string           `json:"upstream"`
	Calls              int              `json:"calls"`
	Outcomes           map[string]int   `json:"outcomes"`
	Statuses           map[string]int   `json:"statuses"`
	CredentialVersions []int            `json:"credential_versions"`
	Denied             int              `json:"denied"`
	DeniedPaths        []PathCount      `json:"denied_paths,omitempty"`
	RateLimited        int              `json:"ratelimit_refusals"`
	WaitMSTotal        float64          `json:"ratelimit_wait_ms_total"`
	WaitMSMax          float64          `json:"ratelimit_wait_ms_max"`
	versions           map[int]struct{} // for CredentialVersions
}

// PathCount is a refused path and how often.
type PathCount struct {
	Path  string `json:"path"`
	Count int    `json:"count"`
}

// EventCounts are the lifecycle events of the period.
type EventCounts struct {
	Rotations       int            `json:"rotations"`
	Reloads         int            `json:"reloads"`
	ReloadsRejected int            `json:"reloads_rejected"`
	RefreshFailures int            `json:"refresh_failures"`
	StaleServing    int            `json:"stale_serving"`
	AuditOutages    int            `json:"audit_outages"`
	Checkpoints     int            `json:"checkpoints"`
	ByName          map[string]int `json:"by_name"`
	// Notable lists the events above, first ones first (at most 200).
	Notable []EventLine `json:"notable"`
}

// EventLine is one notable event.
type EventLine struct {
	Time     time.Time `json:"time"`
	Name     string    `json:"name"`
	Upstream string    `json:"upstream,omitempty"`
	Detail   string    `json:"detail,omitempty"`
}

const (
	maxDeniedPaths = 1000 // distinct paths kept per row; the rest as "(other)"
	topDenied      = 5
	maxNotable     = 200
)

// NewReport starts an empty report.
func NewReport(f ReportFilter) *Report {
	return &Report{filter: f, rows: map[[2]string]*ReportRow{}, denied: map[[2]string]map[string]int{},
		hours: map[string]map[int64]*[2]int{}, Events: EventCounts{ByName: map[string]int{}}}
}

// reportLine is what a report reads of a line.
type reportLine struct {
	Type            string         `json:"type"`
	Time            string         `json:"time"`
	Caller          string         `json:"caller"`
	CallerAuth      string         `json:"caller_auth"`
	Upstream        string         `json:"upstream"`
	Path            string         `json:"path"`
	Status          int            `json:"status"`
	Outcome         string         `json:"outcome"`
	Policy          string         `json:"policy"`
	RateLimitedBy   string         `json:"ratelimited_by"`
	RateLimitWaitMS float64        `json:"ratelimit_wait_ms"`
	Credential      *CredentialRef `json:"credential"`
	Event           *Event         `json:"event"`
}

// Add counts one line of the trail.
func (r *Report) Add(line []byte) error {
	var l reportLine
	if err := json.Unmarshal(line, &l); err != nil {
		return fmt.Errorf("not an audit record: %w", err)
	}
	at, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return fmt.Errorf("record time %q: %w", l.Time, err)
	}
	f := r.filter
	if (!f.Since.IsZero() && at.Before(f.Since)) || (!f.Until.IsZero() && !at.Before(f.Until)) {
		return nil
	}
	if l.Type == TypeEvent && l.Event != nil {
		if f.Caller == "" && (f.Upstream == "" || l.Event.Upstream == "" || l.Event.Upstream == f.Upstream) {
			r.span(at)
			r.event(at, l.Event)
		}
		return nil
	}
	caller := callerLabel(l.Caller, l.CallerAuth)
	if (f.Caller != "" && caller != f.Caller) || (f.Upstream != "" && l.Upstream != f.Upstream) {
		return nil
	}
	r.span(at)
	key := [2]string{caller, l.Upstream}
	row := r.rows[key]
	if row == nil {
		row = &ReportRow{Caller: caller, Upstream: l.Upstream, Outcomes: map[string]int{}, Statuses: map[string]int{}, versions: map[int]struct{}{}}
		r.rows[key] = row
	}
	row.Calls++
	row.Outcomes[l.Outcome]++
	row.Statuses[strconv.Itoa(l.Status)]++
	if l.Credential != nil && l.Credential.Version > 0 {
		row.versions[l.Credential.Version] = struct{}{}
	}
	if l.Policy == PolicyDenied {
		row.Denied++
		paths := r.denied[key]
		if paths == nil {
			paths = map[string]int{}
			r.denied[key] = paths
		}
		p := l.Path
		if _, ok := paths[p]; !ok && len(paths) >= maxDeniedPaths {
			p = "(other)"
		}
		paths[p]++
	}
	refused := l.Status == 429 && l.RateLimitedBy != ""
	if refused {
		row.RateLimited++
	}
	row.WaitMSTotal += l.RateLimitWaitMS
	row.WaitMSMax = max(row.WaitMSMax, l.RateLimitWaitMS)
	h := r.hours[caller]
	if h == nil {
		h = map[int64]*[2]int{}
		r.hours[caller] = h
	}
	hour := at.Unix() / 3600
	if h[hour] == nil {
		h[hour] = &[2]int{}
	}
	h[hour][0]++
	if l.Outcome == OutcomeRefused {
		h[hour][1]++
	}
	return nil
}

func callerLabel(name, auth string) string {
	switch {
	case name != "":
		return name
	case auth == "anonymous":
		return "(anonymous)"
	}
	return "(no identity)"
}

func (r *Report) span(at time.Time) {
	if r.From.IsZero() || at.Before(r.From) {
		r.From = at
	}
	if at.After(r.To) {
		r.To = at
	}
}

func (r *Report) event(at time.Time, ev *Event) {
	e := &r.Events
	e.ByName[ev.Name]++
	notable := true
	switch ev.Name {
	case "credential_rotated":
		e.Rotations++
	case "config_reloaded":
		e.Reloads++
	case "config_rejected":
		e.ReloadsRejected++
	case "credential_refresh_failed":
		e.RefreshFailures++
	case "credential_serving_stale":
		e.StaleServing++
	case "audit_recovered", "audit_torn_tail", "audit_disk_low":
		e.AuditOutages++
	case EventCheckpoint:
		e.Checkpoints++
		notable = false
	default:
		notable = false
	}
	if notable && len(e.Notable) < maxNotable {
		e.Notable = append(e.Notable, EventLine{Time: at, Name: ev.Name, Upstream: ev.Upstream, Detail: ev.Detail})
	}
}

// Finish sorts the rows and picks the top denied paths.
func (r *Report) Finish() {
	r.Rows = r.Rows[:0]
	for key, row := range r.rows {
		for v := range row.versions {
			row.CredentialVersions = append(row.CredentialVersions, v)
		}
		sort.Ints(row.CredentialVersions)
		if row.CredentialVersions == nil {
			row.CredentialVersions = []int{}
		}
		for p, n := range r.denied[key] {
			row.DeniedPaths = append(row.DeniedPaths, PathCount{p, n})
		}
		sort.Slice(row.DeniedPaths, func(i, j int) bool {
			a, b := row.DeniedPaths[i], row.DeniedPaths[j]
			return a.Count > b.Count || (a.Count == b.Count && a.Path < b.Path)
		})
		if len(row.DeniedPaths) > topDenied {
			row.DeniedPaths = row.DeniedPaths[:topDenied]
		}
		r.Rows = append(r.Rows, *row)
	}
	sort.Slice(r.Rows, func(i, j int) bool {
		a, b := r.Rows[i], r.Rows[j]
		return a.Caller < b.Caller || (a.Caller == b.Caller && a.Upstream < b.Upstream)
	})
}

// ReadTrail streams every record of the sources into the report.
func (r *Report) ReadTrail(srcs []Source) error {
	for _, src := range srcs {
		br := bufio.NewReaderSize(src.R, 64<<10)
		for n := 1; ; n++ {
			line, complete, err := readLine(br)
			if err != nil {
				return fmt.Errorf("%s: line %d: %w", src.Name, n, err)
			}
			if line == nil {
				break
			}
			if err := r.Add(line); err != nil {
				if !complete {
					break // a torn final line: nothing to count
				}
				return fmt.Errorf("%s: line %d: %w", src.Name, n, err)
			}
		}
	}
	r.Finish()
	return nil
}
