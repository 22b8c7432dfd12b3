package ratelimit

import (
	"context"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Ticket is an admitted call's hold on its quota slot. The zero Ticket
// holds nothing.
type Ticket struct {
	r   releaser
	key string
	id  uint64
}

type releaser interface {
	release(t Ticket, sent bool)
}

// Release ends the hold. sent reports whether the call went to the vendor:
// if it did, the slot stays taken until Per (plus the margin) after now,
// when its reply or error came back; if it did not, the slot is free at
// once. Only the first call counts.
func (t Ticket) Release(sent bool) {
	if t.r != nil {
		t.r.release(t, sent)
	}
}

// Window keeps vendor quotas as exact sliding windows, counted the way the
// vendor counts: a call is admitted while fewer than Requests calls hold a
// slot, so up to Requests go at once, and it holds its slot from admission
// until Per after its reply (or error) came back, plus Margin. The vendor
// counts a call when it arrives, which is between the two, so network
// jitter can never put Requests+1 calls into one vendor window.
//
// Burst below Requests smooths: at most Burst calls go at once, then the
// rest at Requests/Per (a token bucket from golang.org/x/time/rate).
// Callers that wait are admitted in arrival order; a call that would wait
// longer than MaxWait is refused at once when its turn is known to be too
// late, with the real time until a slot frees. Memory is O(Requests) per
// key. A pause (after a vendor 429) holds every call under the key.
type Window struct {
	now    func() time.Time
	margin time.Duration

	mu        sync.Mutex
	keys      map[string]*window
	nextID    uint64
	lastSweep time.Time
}

type window struct {
	lim    Limit
	slots  []slot        // calls holding a place in the window
	bucket *rate.Limiter // Burst < Requests: smoothing; nil otherwise
	paused time.Time
	queue  []*waiter // FIFO
	timer  *time.Timer
	used   time.Time
}

type slot struct {
	id  uint64
	end time.Time // zero while the call is in flight
}

type waiter struct {
	ready    chan struct{}
	admitted bool
	id       uint64
}

// DefaultMargin is the time a released slot is held beyond Per.
const DefaultMargin = 25 * time.Millisecond

// NewWindow returns an empty limiter; now is its clock (time.Now) and
// margin what a slot is held beyond Per (DefaultMargin when 0).
func NewWindow(now func() time.Time, margin time.Duration) *Window {
	if now == nil {
		now = time.Now
	}
	if margin <= 0 {
		margin = DefaultMargin
	}
	return &Window{now: now, margin: margin, keys: map[string]*window{}}
}

// Acquire admits one call under key's limit, waiting up to lim.MaxWait
// for its turn. The returned Ticket must be released once the call is done
// (see Ticket.Release). The wait ends early when ctx ends.
func (l *Window) Acquire(ctx context.Context, key string, lim Limit) (Result, Ticket, error) {
	start := l.now()
	l.mu.Lock()
	w := l.get(key, lim, start)
	if len(w.queue) == 0 {
		if id, ok := l.admit(w, start); ok {
			res := w.result(start, 0)
			l.mu.Unlock()
			return res, l.ticket(key, w, id), nil
		}
	}
	at, known := w.nextFree(start, len(w.queue))
	if lim.MaxWait <= 0 || (known && at.Sub(start) > lim.MaxWait) {
		err := w.refusal(start, at, known)
		l.mu.Unlock()
		return Result{}, Ticket{}, err
	}
	wt := &waiter{ready: make(chan struct{})}
	w.queue = append(w.queue, wt)
	l.schedule(key, w, start)
	l.mu.Unlock()

	timer := time.NewTimer(lim.MaxWait)
	defer timer.Stop()
	select {
	case <-wt.ready:
	case <-timer.C:
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if wt.admitted {
		if ctx.Err() != nil {
			w.free(wt.id)
			l.dispatch(key, w, now)
			return Result{}, Ticket{}, ctx.Err()
		}
		return w.result(now, now.Sub(start)), l.ticket(key, w, wt.id), nil
	}
	for i, q := range w.queue {
		if q == wt {
			w.queue = append(w.queue[:i], w.queue[i+1:]...)
			break
		}
	}
	l.dispatch(key, w, now)
	if ctx.Err() != nil {
		return Result{}, Ticket{}, ctx.Err()
	}
	at, known = w.nextFree(now, 0)
	return Result{}, Ticket{}, w.refusal(now, at, known)
}

// Pause holds every call under key until until (a vendor answered 429).
func (l *Window) Pause(key string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	w, ok := l.keys[key]
	if !ok {
		w = &window{used: now}
		l.keys[key] = w
	}
	if until.After(w.paused) {
		w.paused = until
	}
	l.schedule(key, w, now)
}

// Usage returns how many calls hold a slot under key now, and the quota.
func (l *Window) Usage(key string) (inUse, requests int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.keys[key]
	if !ok {
		return 0, 0
	}
	w.expire(l.now())
	return len(w.slots), w.lim.Requests
}

// Len returns the number of keys held (for tests).
func (l *Window) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

func (l *Window) get(key string, lim Limit, now time.Time) *window {
	if now.Sub(l.lastSweep) > time.Minute {
		l.sweep(now)
	}
	w, ok := l.keys[key]
	if !ok {
		w = &window{}
		l.keys[key] = w
	}
	if w.lim != lim {
		// New, or the configuration changed (hot reload): slots held stay
		// held; the smoothing bucket follows the new limit.
		w.lim = lim
		w.bucket = nil
		if b := lim.burst(); lim.Requests > 0 && lim.Per > 0 && lim.Burst > 0 && b < lim.Requests {
			w.bucket = rate.NewLimiter(rate.Limit(float64(lim.Requests)/lim.Per.Seconds()), b)
		}
	}
	w.used = now
	return w
}

// sweep drops keys that hold nothing and have waited for nothing for a
// while: a new window starts empty, so that changes nothing.
func (l *Window) sweep(now time.Time) {
	l.lastSweep = now
	for k, w := range l.keys {
		w.expire(now)
		if len(w.slots) == 0 && len(w.queue) == 0 && now.After(w.paused) && now.Sub(w.used) > max(time.Minute, 2*w.lim.Per) {
			delete(l.keys, k)
		}
	}
}

// admit takes a slot for a call now, if the window, the smoothing bucket
// and any pause allow it.
func (l *Window) admit(w *window, now time.Time) (uint64, bool) {
	if now.Before(w.paused) {
		return 0, false
	}
	l.nextID++
	if w.lim.Requests <= 0 {
		return l.nextID, true // no quota: only pauses hold calls
	}
	w.expire(now)
	if len(w.slots) >= w.lim.Requests {
		return 0, false
	}
	if w.bucket != nil && !w.bucket.AllowN(now, 1) {
		return 0, false
	}
	w.slots = append(w.slots, slot{id: l.nextID})
	return l.nextID, true
}

// expire drops the slots whose hold has ended.
func (w *window) expire(now time.Time) {
	kept := w.slots[:0]
	for _, s := range w.slots {
		if s.end.IsZero() || s.end.After(now) {
			kept = append(kept, s)
		}
	}
	w.slots = kept
}

func (w *window) free(id uint64) {
	for i, s := range w.slots {
		if s.id == id {
			w.slots = append(w.slots[:i], w.slots[i+1:]...)
			return
		}
	}
}

// nextFree is the earliest time the call at queue position pos could be
// admitted, and whether it is known (it is not while the slots it waits
// for are held by calls still in flight).
func (w *window) nextFree(now time.Time, pos int) (time.Time, bool) {
	at := now
	if w.paused.After(at) {
		at = w.paused
	}
	if w.lim.Requests <= 0 {
		return at, true
	}
	w.expire(now)
	if need := len(w.slots) + pos + 1 - w.lim.Requests; need > 0 {
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

// refusal is the 429 for a call that cannot go within MaxWait: retry when
// a slot frees (at, when known; else the earliest known end, else Per).
func (w *window) refusal(now, at time.Time, known bool) *RefusedError {
	retry := w.lim.Per
	if known {
		retry = at.Sub(now)
	} else {
		for _, s := range w.slots {
			if !s.end.IsZero() && s.end.Sub(now) < retry {
				retry = s.end.Sub(now)
			}
		}
	}
	return &RefusedError{RetryAfter: max(retry, time.Millisecond), Limit: w.lim.Requests, Reset: max(retry, 0),
		Paused: w.paused.After(now) && !at.After(w.paused)}
}

func (w *window) result(now time.Time, waited time.Duration) Result {
	r := Result{Waited: waited, Limit: w.lim.Requests}
	if w.lim.Requests > 0 {
		r.Remaining = max(0, w.lim.Requests-len(w.slots))
		if at, known := w.nextFree(now, 0); known && at.After(now) {
			r.Reset = at.Sub(now)
		}
	}
	return r
}

// dispatch admits waiting calls in arrival order while the window allows,
// then schedules the next wake-up.
func (l *Window) dispatch(key string, w *window, now time.Time) {
	for len(w.queue) > 0 {
		id, ok := l.admit(w, now)
		if !ok {
			break
		}
		head := w.queue[0]
		w.queue = w.queue[1:]
		head.id, head.admitted = id, true
		close(head.ready)
	}
	l.schedule(key, w, now)
}

// schedule sets a timer for when the first waiter's turn is known to come.
// While it waits for calls in flight, their release wakes it instead.
func (l *Window) schedule(key string, w *window, now time.Time) {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if len(w.queue) == 0 {
		return
	}
	at, known := w.nextFree(now, 0)
	if !known {
		return
	}
	w.timer = time.AfterFunc(max(at.Sub(now), 0), func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.dispatch(key, w, l.now())
	})
}

// nthEnd is the n-th earliest known end among the slots held (1-based);
// false when fewer than n slots have a known end.
func (w *window) nthEnd(n int) (time.Time, bool) {
	if n == 1 { // the common case, without allocating
		var first time.Time
		for _, s := range w.slots {
			if !s.end.IsZero() && (first.IsZero() || s.end.Before(first)) {
				first = s.end
			}
		}
		return first, !first.IsZero()
	}
	var ends []time.Time
	for _, s := range w.slots {
		if !s.end.IsZero() {
			ends = append(ends, s.end)
		}
	}
	if n > len(ends) {
		return time.Time{}, false
	}
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	return ends[n-1], true
}

func (l *Window) ticket(key string, w *window, id uint64) Ticket {
	if w.lim.Requests <= 0 {
		return Ticket{}
	}
	return Ticket{r: l, key: key, id: id}
}

func (l *Window) release(t Ticket, sent bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.keys[t.key]
	if !ok {
		return
	}
	now := l.now()
	for i := range w.slots {
		if w.slots[i].id != t.id || !w.slots[i].end.IsZero() {
			continue
		}
		if sent {
			w.slots[i].end = now.Add(w.lim.Per + l.margin)
		} else {
			w.slots = append(w.slots[:i], w.slots[i+1:]...)
		}
		l.dispatch(t.key, w, now)
		return
	}
}
