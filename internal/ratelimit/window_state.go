package ratelimit

import (
	"time"

	"golang.org/x/time/rate"
)

type window struct {
	lim Quota
	// inflight are the calls admitted whose reply has not come back;
	// ends are when the released ones' holds end, oldest first (releases
	// come in time order, so appending keeps them sorted).
	inflight map[uint64]slot
	ends     []slotEnd
	head     int           // ends[head:] are live
	bucket   *rate.Limiter // Burst < Requests: smoothing; nil otherwise
	paused   time.Time
	// hold holds shared slots only: after a hand-off from Redis, until
	// the calls other replicas sent have left the window.
	hold time.Time
	// parties are the callers seen (one, "", without Shares); internal
	// is the Ahead calls' party (no reserve, no cap).
	parties  map[string]*party
	solo     *party // parties[""], without Shares
	internal *party
	aheadQ   []*waiter // Ahead calls waiting, in arrival order
	waiting  int       // calls waiting in the parties' queues
	reserved int       // reserved slots held, all parties
	vtime    float64   // fair queuing's clock: the pass of the last served
	seq      uint64
	timer    *time.Timer
	used     time.Time
}

// party is one caller's state under a key: its share, the slots it holds,
// its waiting calls and its fair-queuing pass.
type party struct {
	name     string
	share    Share
	held     int // slots held, reserved ones included
	reserved int
	queue    []*waiter
	pass     float64
}

type slot struct {
	p        *party
	reserved bool
}

type slotEnd struct {
	at time.Time
	slot
}

type waiter struct {
	ready    chan struct{}
	admitted bool
	reserved bool
	ahead    bool
	id       uint64
	seq      uint64
	p        *party
}

func newWindowState(now time.Time) *window {
	w := &window{used: now, inflight: map[uint64]slot{}, parties: map[string]*party{},
		internal: &party{share: Share{Weight: 1}}}
	return w
}

// held is how many calls hold a slot.
func (w *window) held() int { return len(w.inflight) + len(w.ends) - w.head }

// expire drops the released slots whose hold has ended: amortized O(1).
func (w *window) expire(now time.Time) {
	for w.head < len(w.ends) && !w.ends[w.head].at.After(now) {
		w.drop(w.ends[w.head].slot)
		w.ends[w.head] = slotEnd{}
		w.head++
	}
	if w.head > 0 && w.head*2 >= len(w.ends) {
		n := copy(w.ends, w.ends[w.head:])
		w.ends, w.head = w.ends[:n], 0
	}
}

// drop counts a slot out of its party.
func (w *window) drop(s slot) {
	if s.p == nil {
		return
	}
	s.p.held--
	if s.reserved {
		s.p.reserved--
		w.reserved--
	}
}

func (w *window) free(id uint64) {
	if s, ok := w.inflight[id]; ok {
		delete(w.inflight, id)
		w.drop(s)
	}
}

// keep puts a call that left the in-flight ones among the released
// ones, held until end.
func (w *window) keep(s slot, end time.Time) {
	if n := len(w.ends); n > w.head && end.Before(w.ends[n-1].at) {
		end = w.ends[n-1].at // keep them sorted (a shorter Per after a reload): hold longer, never shorter
	}
	w.ends = append(w.ends, slotEnd{end, s})
}

// nextFree is the earliest time the call at queue position pos could be
// admitted, and whether it is known (it is not while the slots it waits
// for are held by calls still in flight).
func (w *window) nextFree(now time.Time, pos int) (time.Time, bool) {
	at := now
	if w.paused.After(at) {
		at = w.paused
	}
	if w.hold.After(at) {
		at = w.hold
	}
	if w.lim.Requests <= 0 {
		return at, true
	}
	w.expire(now)
	if need := w.held() + pos + 1 - w.lim.Requests; need > 0 {
		end, ok := w.nthEnd(need)
		if !ok {
			return time.Time{}, false
		}
		if end.After(at) {
			at = end
		}
	}
	if w.bucket != nil {
		if deficit := float64(pos+1) - w.bucket.TokensAt(now); deficit > 0 {
			t := now.Add(time.Duration(deficit / float64(w.bucket.Limit()) * float64(time.Second)))
			if t.After(at) {
				at = t
			}
		}
	}
	return at, true
}

// refusal is the 429 for p's call that cannot go within MaxWait, standing
// at pos in line: retry when a slot frees (when known; else the earliest
// known end, else Per). Share says p's own cap refused it.
func (w *window) refusal(now time.Time, p *party, pos int) *RefusedError {
	at, known := w.nextFree(now, pos)
	if w.lim.Shares != nil {
		at, known = w.nextFree(now, 0)
	}
	retry := w.lim.Per
	if known {
		retry = at.Sub(now)
	} else if end, ok := w.nthEnd(1); ok && end.Sub(now) < retry {
		retry = end.Sub(now)
	}
	return &RefusedError{RetryAfter: max(retry, time.Millisecond), Limit: w.lim.Requests, Reset: max(retry, 0),
		Paused: w.paused.After(now) && !at.After(w.paused), Share: p.atMax()}
}

// result is an admitted call's view of the quota. Remaining is what p
// could take now: without Shares the free slots; with, its unused
// reserve and the free shared slots, capped by its Max.
func (w *window) result(now time.Time, waited time.Duration, p *party, reserved bool) Result {
	r := Result{Waited: waited, Limit: w.lim.Requests, Reserved: reserved}
	if w.lim.Requests > 0 {
		free := w.lim.Requests - w.lim.Shares.Reserved() - (w.held() - w.reserved)
		rem := max(0, free) + max(0, p.share.Reserve-p.reserved)
		if p.share.Max > 0 {
			rem = min(rem, p.share.Max-p.held)
		}
		r.Remaining = max(0, rem)
		if at, known := w.nextFree(now, 0); known && at.After(now) {
			r.Reset = at.Sub(now)
		}
	}
	return r
}

// nthEnd is the n-th earliest known end among the slots held (1-based);
// false when fewer than n slots have a known end (the rest are in flight).
func (w *window) nthEnd(n int) (time.Time, bool) {
	if i := w.head + n - 1; i < len(w.ends) {
		return w.ends[i].at, true
	}
	return time.Time{}, false
}
