package proxy

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

// A caller with a valid key can make keybroker refuse it as often as it
// likes (a path it may not use, over its own rate limit), and each refusal
// would write a record: one stolen low-privilege key could fill the audit
// disk, after which every caller gets 503. So a known caller's refusals
// have a budget, as keyless requests do. Within it each refusal has its
// record; beyond it a refusal keeps its status (a 403 stays a 403: a 429
// would only invite retries) but is only counted, in one refusal_summary
// event per caller per interval that counts the calls by refusal code and
// names the most refused paths. Calls the caller is allowed to make are
// always recorded: each of them reached a vendor.

// DefaultRefusalsPerCaller is a known caller's default refusal budget.
var DefaultRefusalsPerCaller = ratelimit.Limit{Requests: 60, Per: time.Minute, Burst: 30}

// RefusalObserver, when the Observer implements it, is told of every
// refusal of a known caller that was counted instead of recorded.
type RefusalObserver interface {
	RefusalUnrecorded(caller string)
}

// chargedToCaller reports whether a refusal with this code is the caller's
// doing (and so spends its budget): not a credential or audit outage.
func chargedToCaller(code string) bool {
	switch code {
	case CodeBadRequest, CodeCallerForbidden, CodeUnknownUpstream, CodeBodyTooLarge, CodeRateLimited:
		return true
	}
	return false
}

// overRefusals reports whether a refusal of the known caller c is over its
// budget. If so the refusal is answered as it would have been, counted for
// the summary, and gets no record of its own.
func (p *Proxy) overRefusals(w http.ResponseWriter, r *http.Request, c *call, st *state, ref *refusal) bool {
	caller := c.rec.Caller
	if _, err := p.gate.Wait(r.Context(), "refusals:"+caller, st.refusals); err == nil {
		return false
	}
	fail(w, c, ref.code, ref.msg)
	c.unrecorded = true
	p.refused.add(caller, ref.code, c.rec.Path, p.opts.Now())
	if o, ok := p.opts.Observer.(RefusalObserver); ok {
		o.RefusalUnrecorded(caller)
	}
	return true
}

// Bounds of a refusal summary: paths counted one by one per caller (the
// rest as "(other)"), paths named in the event, callers counted one by one.
const (
	maxRefusedPaths   = 1000
	topRefusedPaths   = 5
	maxRefusedCallers = 1000
)

// refusalSummary counts unrecorded refusals per caller until the next
// flush.
type refusalSummary struct {
	mu      sync.Mutex
	since   time.Time
	callers map[string]*refusalCount
}

type refusalCount struct {
	count int64
	codes map[string]int64
	paths map[string]int64
}

func (s *refusalSummary) add(caller, code, path string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.callers == nil {
		s.callers, s.since = map[string]*refusalCount{}, now
	}
	rc := s.callers[caller]
	if rc == nil {
		if len(s.callers) >= maxRefusedCallers {
			caller = "(other)"
			rc = s.callers[caller]
		}
		if rc == nil {
			rc = &refusalCount{codes: map[string]int64{}, paths: map[string]int64{}}
			s.callers[caller] = rc
		}
	}
	rc.count++
	rc.codes[code]++
	if _, ok := rc.paths[path]; !ok && len(rc.paths) >= maxRefusedPaths {
		path = "(other)"
	}
	rc.paths[path]++
}

func (s *refusalSummary) take() (map[string]*refusalCount, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, since := s.callers, s.since
	s.callers = nil
	return c, since
}

// FlushRefusals writes one refusal_summary event per caller counted since
// the last flush.
func (p *Proxy) FlushRefusals() {
	counts, since := p.refused.take()
	if len(counts) == 0 {
		return
	}
	now := p.opts.Now()
	names := slices.Sorted(maps.Keys(counts))
	for _, n := range names {
		rc := counts[n]
		ev := audit.Event{Name: "refusal_summary", Caller: n, Count: rc.count, Outcomes: rc.codes, Paths: topPaths(rc.paths),
			Detail: fmt.Sprintf("refused over the caller's refusal budget (server.refusals.per_caller) and not recorded one by one since %s",
				since.UTC().Format(time.RFC3339))}
		if err := p.opts.Auditor.WriteEvent(ev, now); err != nil {
			p.opts.Log.Error("audit summary not written", zap.String("caller", n), zap.Error(err))
		}
	}
	p.opts.Log.Warn("known callers' refusals over their budget were summarised", zap.Strings("callers", names))
}

// topPaths are the most refused paths, most first (then by path).
func topPaths(m map[string]int64) []audit.PathCount {
	out := make([]audit.PathCount, 0, len(m))
	for path, n := range m {
		out = append(out, audit.PathCount{Path: path, Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Count > out[j].Count || (out[i].Count == out[j].Count && out[i].Path < out[j].Path)
	})
	if len(out) > topRefusedPaths {
		out = out[:topRefusedPaths]
	}
	return out
}
