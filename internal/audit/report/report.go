// Package report is the auditor's report on an audit trail: per caller and
// upstream, the calls, how they ended, what was refused, the lifecycle
// events, and whether the files given form one intact hash chain; as a
// table, CSV, JSON or one self-contained HTML page. It only reads a trail:
// writing and verifying one is package audit's.
package report

import (
	"sort"
	"strconv"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
)

// Filter selects the records a report counts; zero fields select all.
type Filter struct {
	Since, Until     time.Time
	Caller, Upstream string
}

// Report is what an auditor asks of a trail. It is built by streaming the
// trail (AddLine, one line at a time), so a year of records needs memory
// only for the rows and the chart's buckets, not the records.
type Report struct {
	From   time.Time   `json:"from"`
	To     time.Time   `json:"to"`
	Rows   []Row       `json:"rows"`
	Events EventCounts `json:"events"`
	// Interrupted are the calls that left for the vendor and have no end
	// record, in the order they began: named by a call_interrupted event
	// (keybroker was killed, or its disk filled, while the call was at
	// the vendor), or still open in the files read (at the vendor when
	// the trail was read, or not yet named by a restart). The vendor may
	// have acted on each. At most maxInterrupted are listed.
	Interrupted []Interrupted `json:"interrupted"`
	// InterruptedUnlisted counts those past maxInterrupted.
	InterruptedUnlisted int `json:"interrupted_unlisted,omitempty"`
	// Replicas count each replica's files, records and calls, when the
	// trail is several replicas' (empty for one).
	Replicas []ReplicaCount `json:"replicas,omitempty"`
	// Operations count the calls by caller and vendor operation, on the
	// upstreams whose records name operations: admin first, then respond,
	// read, and the undocumented calls (each named by method and path).
	Operations []OperationRow `json:"operations"`
	// Chain says which files were read and whether they chain.
	Chain Chain `json:"chain"`
	// BucketSeconds is the chart's bucket: the smallest of a fixed ladder
	// (1s … 1 week) that shows the period in at most maxBuckets buckets.
	BucketSeconds int64 `json:"bucket_seconds"`

	filter Filter
	rows   map[[2]string]*Row
	denied map[[2]string]map[string]int
	// buckets counts calls and refusals per caller per bucket.
	buckets map[string]map[int64]*[2]int
	chain   audit.Chain
	// begun are the begin lines read whose end is yet to come, by seq.
	begun map[uint64]Interrupted
	// replica is the replica whose files are being read.
	replica string
	// ops counts calls by caller, upstream and operation (undocumented:
	// "METHOD path"); catalogued are the upstreams whose records named
	// an operation, the ones whose empty operation means undocumented.
	ops        map[opKey]*OperationRow
	opsPerRow  map[[2]string]int
	catalogued map[string]bool
}

// Row is one caller's use of one upstream.
type Row struct {
	Caller      string `json:"caller"`
	Upstream    string `json:"upstream"`
	Calls       int    `json:"calls"`
	Interrupted int    `json:"interrupted"`
	// TokensIssued are the keybroker tokens the upstream's token endpoint
	// issued the caller (drop-in OAuth clients).
	TokensIssued       int64            `json:"tokens_issued"`
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

const (
	maxDeniedPaths = 1000 // distinct paths kept per row; the rest as "(other)"
	topDenied      = 5
	maxNotable     = 200
)

// New starts an empty report.
func New(f Filter) *Report {
	return &Report{filter: f, rows: map[[2]string]*Row{}, denied: map[[2]string]map[string]int{},
		buckets: map[string]map[int64]*[2]int{}, Events: EventCounts{ByName: map[string]int{}}, begun: map[uint64]Interrupted{},
		ops: map[opKey]*OperationRow{}, opsPerRow: map[[2]string]int{}, catalogued: map[string]bool{},
		BucketSeconds: ladder[0], Chain: Chain{Intact: true}}
}

// line is what a report reads of a record.
type line struct {
	Seq             uint64               `json:"seq"`
	Prev            string               `json:"prev"`
	Type            string               `json:"type"`
	Time            string               `json:"time"`
	RequestID       string               `json:"request_id"`
	Method          string               `json:"method"`
	Operation       string               `json:"operation"`
	Tier            string               `json:"tier"`
	BeginSeq        uint64               `json:"begin_seq"`
	Caller          string               `json:"caller"`
	CallerAuth      string               `json:"caller_auth"`
	Upstream        string               `json:"upstream"`
	Path            string               `json:"path"`
	Status          int                  `json:"status"`
	Outcome         string               `json:"outcome"`
	Policy          string               `json:"policy"`
	RateLimitedBy   string               `json:"ratelimited_by"`
	RateLimitWaitMS float64              `json:"ratelimit_wait_ms"`
	Credential      *audit.CredentialRef `json:"credential"`
	Event           *audit.Event         `json:"event"`
	at              time.Time            // Time, parsed
}

// AddLine counts one record of the trail.
func (r *Report) AddLine(raw []byte) error {
	var l line
	if err := decodeLine(raw, &l); err != nil {
		return err
	}
	r.add(&l)
	return nil
}

// add counts one decoded record.
func (r *Report) add(lp *line) {
	l, at := *lp, lp.at
	f := r.filter
	if (!f.Since.IsZero() && at.Before(f.Since)) || (!f.Until.IsZero() && !at.Before(f.Until)) {
		return
	}
	if l.Type == audit.TypeEvent && l.Event != nil {
		if l.Event.Name == audit.EventCallInterrupted {
			r.interrupted(at, l.Event)
			return
		}
		if f.Caller == "" && (f.Upstream == "" || l.Event.Upstream == "" || l.Event.Upstream == f.Upstream) {
			r.span(at)
			r.event(at, l.Event)
		}
		return
	}
	caller := callerLabel(l.Caller, l.CallerAuth)
	if (f.Caller != "" && caller != f.Caller) || (f.Upstream != "" && l.Upstream != f.Upstream) {
		return
	}
	if l.Type == audit.TypeBegin {
		// Not a call: the call's record comes at its end. Kept until then,
		// so that one that never comes is listed.
		r.begun[l.Seq] = Interrupted{BeginSeq: l.Seq, Begun: at, RequestID: l.RequestID, Caller: caller,
			Upstream: l.Upstream, Method: l.Method, Path: l.Path, State: StateOpen}
		return
	}
	delete(r.begun, l.BeginSeq)
	r.span(at)
	key := [2]string{caller, l.Upstream}
	row := r.row(caller, l.Upstream)
	row.Calls++
	row.Outcomes[l.Outcome]++
	row.Statuses[strconv.Itoa(l.Status)]++
	if l.Credential != nil && l.Credential.Version > 0 {
		row.versions[l.Credential.Version] = struct{}{}
	}
	if l.Policy == audit.PolicyDenied {
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
	refusedCall := 0
	if l.Outcome == audit.OutcomeRefused {
		refusedCall = 1
	}
	r.countOperation(caller, &l)
	r.count(caller, at, 1, refusedCall)
	return
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

// row is caller's row on upstream, made when first needed.
func (r *Report) row(caller, upstream string) *Row {
	key := [2]string{caller, upstream}
	row := r.rows[key]
	if row == nil {
		row = &Row{Caller: caller, Upstream: upstream, Outcomes: map[string]int{}, Statuses: map[string]int{}, versions: map[int]struct{}{}}
		r.rows[key] = row
	}
	return row
}

// Finish sorts the rows, picks the top denied paths and fits the chart's
// buckets to the whole period.
func (r *Report) Finish() {
	if !r.From.IsZero() {
		r.fit()
	}
	open := make([]Interrupted, 0, len(r.begun))
	for _, c := range r.begun {
		open = append(open, c)
	}
	sort.Slice(open, func(i, j int) bool { return open[i].BeginSeq < open[j].BeginSeq })
	for _, c := range open {
		r.listInterrupted(c)
	}
	r.begun = map[uint64]Interrupted{}
	r.Operations = r.Operations[:0]
	for _, row := range r.ops {
		if row.Undocumented && !r.catalogued[row.Upstream] {
			continue // an upstream without a catalogue: nothing is documented
		}
		r.Operations = append(r.Operations, *row)
	}
	sort.Slice(r.Operations, func(i, j int) bool {
		a, b := r.Operations[i], r.Operations[j]
		if ra, rb := tierRank(a), tierRank(b); ra != rb {
			return ra < rb
		}
		if a.Caller != b.Caller {
			return a.Caller < b.Caller
		}
		if a.Upstream != b.Upstream {
			return a.Upstream < b.Upstream
		}
		return a.Operation < b.Operation
	})
	if r.Operations == nil {
		r.Operations = []OperationRow{}
	}
	sort.SliceStable(r.Interrupted, func(i, j int) bool { return r.Interrupted[i].BeginSeq < r.Interrupted[j].BeginSeq })
	if r.Interrupted == nil {
		r.Interrupted = []Interrupted{}
	}
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
