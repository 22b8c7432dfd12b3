// Package report is the auditor's report on an audit trail: per caller and
// upstream, the calls, how they ended, what was refused, the lifecycle
// events, and whether the files given form one intact hash chain; as a
// table, CSV, JSON or one self-contained HTML page. It only reads a trail:
// writing and verifying one is package audit's.
package report

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
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

// opKey is one row of the operations table.
type opKey struct{ caller, upstream, operation string }

// OperationRow is a caller's calls of one operation.
type OperationRow struct {
	Caller    string `json:"caller"`
	Upstream  string `json:"upstream"`
	Operation string `json:"operation"`
	// Tier is read, respond or admin; "" for an undocumented call, whose
	// Operation is then "METHOD path" ("(other)" past maxOpsPerRow).
	Tier         string `json:"tier"`
	Undocumented bool   `json:"undocumented,omitempty"`
	Calls        int    `json:"calls"`
	Forwarded    int    `json:"forwarded"`
	Refused      int    `json:"refused"`
}

// maxOpsPerRow bounds the undocumented method-and-path rows a caller's
// upstream keeps; the rest count as "(other)".
const maxOpsPerRow = 1000

// ReplicaCount is one replica's part of the trail.
type ReplicaCount struct {
	Replica string `json:"replica"`
	Files   int    `json:"files"`
	Records int    `json:"records"`
	Calls   int    `json:"calls"`
}

// ReplicaTrail is one replica's files, in order.
type ReplicaTrail struct {
	Replica string
	Sources []audit.Source
}

// Interrupted is a call with no end record.
type Interrupted struct {
	BeginSeq  uint64    `json:"begin_seq"`
	Begun     time.Time `json:"begun"`
	RequestID string    `json:"request_id"`
	Caller    string    `json:"caller"`
	Upstream  string    `json:"upstream"`
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	// State is "interrupted" (a call_interrupted event names it) or
	// "open" (its begin line has no end in the files read).
	State string `json:"state"`
}

// Interrupted states.
const (
	StateInterrupted = "interrupted"
	StateOpen        = "open"
)

const maxInterrupted = 1000

// Chain is the hash-chain check of the files a report read.
type Chain struct {
	Files    []FileCount `json:"files"`
	Intact   bool        `json:"intact"`
	Records  int         `json:"records"`
	FirstSeq uint64      `json:"first_seq"`
	LastSeq  uint64      `json:"last_seq"`
	// Break is the first place the chain breaks ("file: line N (seq S):
	// reason"), empty when intact.
	Break string `json:"break,omitempty"`
	// Signatures is the check of the signed checkpoints with the public
	// keys given (audit report --public-key); nil: not checked.
	Signatures *Signatures `json:"signatures,omitempty"`
}

// Signatures is what the public keys said of the trail's checkpoints.
type Signatures struct {
	Valid       bool `json:"valid"`
	Checkpoints int  `json:"checkpoints"`
	// Covered is the last seq a valid signature covers; Uncovered the
	// records after it.
	Covered   uint64 `json:"covered_seq"`
	Uncovered int    `json:"uncovered"`
	// Problem says why they do not hold ("" when valid).
	Problem string `json:"problem,omitempty"`
}

// SetSignatures records a signature check of the trail (audit.VerifyTrail
// with the keys); err is what it found wrong.
func (r *Report) SetSignatures(v audit.VerifyReport, err error) {
	s := &Signatures{Valid: err == nil && v.Checkpoints > 0, Checkpoints: v.Checkpoints, Covered: v.Covered, Uncovered: v.Uncovered}
	switch {
	case err != nil:
		s.Problem = err.Error()
	case v.Checkpoints == 0:
		s.Problem = "no signed checkpoint in the trail: nothing is covered by a signature"
	}
	r.Chain.Signatures = s
}

// FileCount is one file of the trail and how many records it held.
type FileCount struct {
	Name    string `json:"name"`
	Records int    `json:"records"`
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

// EventCounts are the lifecycle events of the period.
type EventCounts struct {
	Rotations       int `json:"rotations"`
	Reloads         int `json:"reloads"`
	ReloadsRejected int `json:"reloads_rejected"`
	RefreshFailures int `json:"refresh_failures"`
	StaleServing    int `json:"stale_serving"`
	AuditOutages    int `json:"audit_outages"`
	Checkpoints     int `json:"checkpoints"`
	// TokensIssued sums the tokens keybroker's token endpoint issued (an
	// event's count; no count is one).
	TokensIssued int64          `json:"tokens_issued"`
	ByName       map[string]int `json:"by_name"`
	// Notable lists the events above, first ones first (at most 200).
	Notable []EventLine `json:"notable"`
}

// EventLine is one notable event.
type EventLine struct {
	Time     time.Time `json:"time"`
	Replica  string    `json:"replica,omitempty"`
	Name     string    `json:"name"`
	Upstream string    `json:"upstream,omitempty"`
	Detail   string    `json:"detail,omitempty"`
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

// maxBuckets is the most buckets the chart draws.
const maxBuckets = 120

// ladder are the bucket sizes, in seconds, the chart chooses from.
var ladder = []int64{1, 5, 15, 30, 60, 5 * 60, 15 * 60, 30 * 60, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400}

// count adds calls and refusals to caller's bucket at at.
func (r *Report) count(caller string, at time.Time, calls, refused int) {
	r.fit()
	series := r.buckets[caller]
	if series == nil {
		series = map[int64]*[2]int{}
		r.buckets[caller] = series
	}
	b := at.Unix() / r.BucketSeconds
	if series[b] == nil {
		series[b] = &[2]int{}
	}
	series[b][0] += calls
	series[b][1] += refused
}

// fit coarsens every series to the next bucket size while the period
// (From to To) needs more than maxBuckets buckets.
func (r *Report) fit() {
	first, last := r.From.Unix(), r.To.Unix()
	for (last/r.BucketSeconds - first/r.BucketSeconds + 1) > maxBuckets {
		next := r.BucketSeconds
		for _, b := range ladder {
			if b > r.BucketSeconds {
				next = b
				break
			}
		}
		if next == r.BucketSeconds {
			break // a week a bucket: more than two years draw wider
		}
		for c, series := range r.buckets {
			merged := map[int64]*[2]int{}
			for b, n := range series {
				nb := b * r.BucketSeconds / next
				if merged[nb] == nil {
					merged[nb] = &[2]int{}
				}
				merged[nb][0] += n[0]
				merged[nb][1] += n[1]
			}
			r.buckets[c] = merged
		}
		r.BucketSeconds = next
	}
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

func (r *Report) event(at time.Time, ev *audit.Event) {
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
	case audit.EventCheckpoint:
		e.Checkpoints++
		notable = false
	case "token_issued":
		if ev.Outcome == "issued" {
			e.TokensIssued += max(ev.Count, 1)
			if ev.Caller != "" {
				r.row(ev.Caller, ev.Upstream).TokensIssued += max(ev.Count, 1)
			}
		}
		notable = false
	default:
		notable = false
	}
	if notable && len(e.Notable) < maxNotable {
		e.Notable = append(e.Notable, EventLine{Time: at, Replica: r.replica, Name: ev.Name, Upstream: ev.Upstream, Detail: eventDetail(ev)})
	}
}

// interrupted lists a call named by a call_interrupted event (at is when
// the event was written; the call began at ev.Begun) and closes its begin.
func (r *Report) interrupted(at time.Time, ev *audit.Event) {
	delete(r.begun, ev.BeginSeq)
	f := r.filter
	if (f.Caller != "" && ev.Caller != f.Caller) || (f.Upstream != "" && ev.Upstream != f.Upstream) {
		return
	}
	r.span(at)
	r.Events.ByName[ev.Name]++
	begun, err := time.Parse(time.RFC3339Nano, ev.Begun)
	if err != nil {
		begun = at
	}
	caller := callerLabel(ev.Caller, "")
	r.listInterrupted(Interrupted{BeginSeq: ev.BeginSeq, Begun: begun, RequestID: ev.RequestID, Caller: caller,
		Upstream: ev.Upstream, Method: ev.Method, Path: ev.Path, State: StateInterrupted})
}

// listInterrupted adds a call with no end record to the list and to its
// row's count.
func (r *Report) listInterrupted(c Interrupted) {
	r.row(c.Caller, c.Upstream).Interrupted++
	if len(r.Interrupted) >= maxInterrupted {
		r.InterruptedUnlisted++
		return
	}
	r.Interrupted = append(r.Interrupted, c)
}

// countOperation counts a call in the operations table.
func (r *Report) countOperation(caller string, l *line) {
	k := opKey{caller, l.Upstream, l.Operation}
	if l.Operation != "" {
		r.catalogued[l.Upstream] = true
	} else {
		k.operation = l.Method + " " + l.Path
	}
	row := r.ops[k]
	if row == nil {
		rk := [2]string{caller, l.Upstream}
		if l.Operation == "" && r.opsPerRow[rk] >= maxOpsPerRow {
			k.operation = "(other)"
			row = r.ops[k]
		} else if l.Operation == "" {
			r.opsPerRow[rk]++
		}
		if row == nil {
			row = &OperationRow{Caller: caller, Upstream: l.Upstream, Operation: k.operation, Tier: l.Tier, Undocumented: l.Operation == ""}
			r.ops[k] = row
		}
	}
	row.Calls++
	switch l.Outcome {
	case audit.OutcomeForwarded:
		row.Forwarded++
	case audit.OutcomeRefused:
		row.Refused++
	}
}

// tierRank orders the operations table: admin, respond, read, undocumented.
func tierRank(row OperationRow) int {
	switch row.Tier {
	case "admin":
		return 0
	case "respond":
		return 1
	case "read":
		return 2
	}
	return 3
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

// eventDetail is an event's detail, or what its versions say.
func eventDetail(ev *audit.Event) string {
	switch {
	case ev.Detail != "":
		return ev.Detail
	case ev.OldVersion > 0 && ev.Version > 0:
		return fmt.Sprintf("v%d → v%d", ev.OldVersion, ev.Version)
	case ev.Version > 0:
		return fmt.Sprintf("v%d", ev.Version)
	}
	return ""
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

// ReadTrail streams every record of the sources, oldest file first, into
// the report, and checks as it goes that they form one hash chain (as
// `keybroker audit verify` does without keys). A broken chain is stated in
// Chain, not returned: the report still counts what it read.
func (r *Report) ReadTrail(srcs []audit.Source) error {
	return r.ReadReplicas([]ReplicaTrail{{Sources: srcs}})
}

// ReadReplicas reads several replicas' trails as one report: each
// replica's files form its own hash chain (checked as ReadTrail checks
// one); the rows sum them; Replicas counts each; the notable events merge
// in time order, each naming its replica.
func (r *Report) ReadReplicas(trails []ReplicaTrail) error {
	// decoded is a line as the reader's workers leave it.
	type decoded struct {
		l   line
		err error
	}
	decode := func(l *audit.Line, out *decoded) {
		out.err = decodeLine(l.Bytes, &out.l)
	}
	var total audit.Chain
	for _, tr := range trails {
		r.chain, r.replica = audit.Chain{}, tr.Replica
		rc := ReplicaCount{Replica: tr.Replica}
		for _, src := range tr.Sources {
			fc := FileCount{Name: src.Name}
			err := audit.ScanTrail(src.R, decode, func(n int, al *audit.Line, d *decoded) error {
				seq, prev, hasPrev := al.Seq, al.Prev, al.HasPrev
				if !al.Fast {
					seq = d.l.Seq
					prev, hasPrev = audit.ParsePrev(d.l.Prev)
				}
				if seq == 0 || (d.err == errNotRecord) {
					if !al.Complete {
						r.broken(fmt.Sprintf("%s: line %d (after seq %d): torn final line, not a complete record", src.Name, n, r.chain.LastSeq))
						return errTorn // nothing to count
					}
					return fmt.Errorf("%s: line %d (after seq %d): not an audit record", src.Name, n, r.chain.LastSeq)
				}
				if reason := r.chain.Check(seq, prev, hasPrev); reason != "" {
					r.broken(fmt.Sprintf("%s: line %d (seq %d): %s", src.Name, n, seq, reason))
				}
				r.chain.Advance(seq, al.Hash)
				if d.err != nil {
					return fmt.Errorf("%s: line %d (seq %d): %w", src.Name, n, seq, d.err)
				}
				if d.l.Type == audit.TypeCall {
					rc.Calls++
				}
				r.add(&d.l)
				fc.Records++
				return nil
			})
			if err != nil && !errors.Is(err, errTorn) {
				if !strings.HasPrefix(err.Error(), src.Name+": ") {
					err = fmt.Errorf("%s: %w", src.Name, err) // a read error, or a line too long
				}
				return err
			}
			r.Chain.Files = append(r.Chain.Files, fc)
			rc.Files++
			rc.Records += fc.Records
		}
		if total.Records == 0 || (r.chain.Records > 0 && r.chain.FirstSeq < total.FirstSeq) {
			total.FirstSeq = r.chain.FirstSeq
		}
		total.Records += r.chain.Records
		total.LastSeq = max(total.LastSeq, r.chain.LastSeq)
		if len(trails) > 1 {
			r.Replicas = append(r.Replicas, rc)
		}
	}
	r.Chain.Records, r.Chain.FirstSeq, r.Chain.LastSeq = total.Records, total.FirstSeq, total.LastSeq
	sort.SliceStable(r.Events.Notable, func(i, j int) bool { return r.Events.Notable[i].Time.Before(r.Events.Notable[j].Time) })
	r.Finish()
	return nil
}

// errTorn ends the reading of a file at a torn final line.
var errTorn = errors.New("torn final line")

// broken records the first break of the chain.
func (r *Report) broken(where string) {
	if r.Chain.Intact {
		r.Chain.Intact, r.Chain.Break = false, where
	}
}
