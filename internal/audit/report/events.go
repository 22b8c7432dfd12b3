package report

import (
	"fmt"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
)

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
