package ratelimit

import (
	"context"
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
// Callers that wait are admitted in arrival order, after any call marked
// Ahead (keybroker's credential probes); a call that would wait
// longer than MaxWait is refused at once when its turn is known to be too
// late, with the real time until a slot frees. Memory is O(Requests) per
// key. A pause (after a vendor 429) holds every call under the key.
//
// With Shares, a quota is split between callers (Call.Caller): a caller
// with a Reserve holds up to that many slots no other caller can take, and
// a call that can use one is admitted at once, past the line, the pause for
// a hand-off (Hold) and the smoothing; the other slots are shared. A
// caller never holds more than its Max. Waiting callers get freed shared
// slots by weighted fair queuing (stride scheduling: the waiting caller
// that has had the least, per weight, goes next), each caller's own calls
// in arrival order. Without Shares every caller is one party and the line
// is first come, first served, as before.
type Window struct {
	now    func() time.Time
	margin time.Duration

	mu        sync.Mutex
	keys      map[string]*window
	nextID    uint64
	lastSweep time.Time
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

// Acquire admits one call under key's quota, waiting up to c.MaxWait
// for its turn. The returned Ticket must be released once the call is done
// (see Ticket.Release). The wait ends early when ctx ends.
func (l *Window) Acquire(ctx context.Context, key string, lim Quota, c Call) (Result, Ticket, error) {
	start := l.now()
	l.mu.Lock()
	w := l.get(key, lim, start)
	p := w.partyOf(c)
	// Straight in: an Ahead call with no Ahead call before it; a call
	// that can use its caller's reserve (never behind others); any call
	// when nobody waits.
	if (c.Ahead && len(w.aheadQ) == 0) || (!c.Ahead && (p.canReserve() || w.waiting+len(w.aheadQ) == 0)) {
		if id, reserved, ok := l.take(w, p, start, c.Ahead); ok {
			res := w.result(start, 0, p, reserved)
			l.mu.Unlock()
			return res, l.ticket(key, lim, id), nil
		}
	}
	if c.MaxWait <= 0 {
		err := w.refusal(start, p, w.position(c.Ahead))
		l.mu.Unlock()
		return Result{}, Ticket{}, err
	}
	if w.lim.Shares == nil {
		// One line, first come, first served: the turn is known when the
		// slots it waits for have known ends.
		if at, known := w.nextFree(start, w.position(c.Ahead)); known && at.Sub(start) > c.MaxWait {
			err := w.refusal(start, p, w.position(c.Ahead))
			l.mu.Unlock()
			return Result{}, Ticket{}, err
		}
	}
	wt := w.enqueue(p, c.Ahead)
	l.schedule(key, w, start)
	l.mu.Unlock()

	timer := time.NewTimer(c.MaxWait)
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
		return w.result(now, now.Sub(start), p, wt.reserved), l.ticket(key, lim, wt.id), nil
	}
	w.dequeue(wt)
	l.dispatch(key, w, now)
	if ctx.Err() != nil {
		return Result{}, Ticket{}, ctx.Err()
	}
	return Result{}, Ticket{}, w.refusal(now, p, 0)
}

// Pause holds every call under key until until (a vendor answered 429).
func (l *Window) Pause(key string, until time.Time) {
	l.extend(key, until, func(w *window) *time.Time { return &w.paused })
}

// Hold holds every call under key until until, except the calls that can
// use their caller's reserve: after a hand-off from Redis, until the
// calls other replicas sent have left the vendor's window.
func (l *Window) Hold(key string, until time.Time) {
	l.extend(key, until, func(w *window) *time.Time { return &w.hold })
}

// extend moves one of key's hold times to until, never earlier.
func (l *Window) extend(key string, until time.Time, field func(*window) *time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	w := l.placeholder(key, now)
	if t := field(w); until.After(*t) {
		*t = until
	}
	l.schedule(key, w, now)
}

// placeholder returns key's window, making one that takes its limit on
// first use.
func (l *Window) placeholder(key string, now time.Time) *window {
	w, ok := l.keys[key]
	if !ok {
		w = newWindowState(now)
		l.keys[key] = w
	}
	return w
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
	return w.held(), w.lim.Requests
}

// Len returns the number of keys held (for tests).
func (l *Window) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

func (l *Window) get(key string, lim Quota, now time.Time) *window {
	if now.Sub(l.lastSweep) > time.Minute {
		l.sweep(now)
	}
	w := l.placeholder(key, now)
	if w.lim != lim {
		// New, or the configuration changed (hot reload): slots held stay
		// held; the smoothing bucket and the shares follow the new limit.
		w.lim = lim
		w.bucket = nil
		if b := lim.burst(); lim.Requests > 0 && lim.Per > 0 && lim.Burst > 0 && b < lim.Requests {
			w.bucket = rate.NewLimiter(rate.Limit(float64(lim.Requests)/lim.Per.Seconds()), b)
		}
		for name, p := range w.parties {
			p.share = lim.Shares.Of(name)
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
		if w.held() == 0 && w.waiting+len(w.aheadQ) == 0 && now.After(w.paused) && now.After(w.hold) &&
			now.Sub(w.used) > max(time.Minute, 2*w.lim.Per) {
			delete(l.keys, k)
		}
	}
}

// take gives p a slot now, if the pause, its cap and the window allow: one
// of its reserved slots when it has reserve left (never for an Ahead
// call), else a shared slot, which the hand-off hold and the smoothing
// bucket also allow.
func (l *Window) take(w *window, p *party, now time.Time, ahead bool) (id uint64, reserved, ok bool) {
	if now.Before(w.paused) {
		return 0, false, false
	}
	l.nextID++
	if w.lim.Requests <= 0 {
		return l.nextID, false, true // no quota: only pauses hold calls
	}
	w.expire(now)
	if !ahead {
		if p.atMax() {
			return 0, false, false
		}
		// The window bound holds for reserved slots too: it binds only
		// after a reload shrank the shared part below what is held.
		if p.reserved < p.share.Reserve && w.held() < w.lim.Requests {
			w.inflight[l.nextID] = slot{p, true}
			p.held++
			p.reserved++
			w.reserved++
			return l.nextID, true, true
		}
	}
	if now.Before(w.hold) || w.held()-w.reserved >= w.lim.Requests-w.lim.Shares.Reserved() {
		return 0, false, false
	}
	if w.bucket != nil && !w.bucket.AllowN(now, 1) {
		return 0, false, false
	}
	w.inflight[l.nextID] = slot{p, false}
	p.held++
	return l.nextID, false, true
}

// dispatch admits waiting calls while the window allows, then schedules
// the next wake-up: the Ahead calls first (shared slots); then every
// caller waiting with reserve to use; then shared slots by fair queuing,
// to the waiting caller with the least pass (its pass grows by 1/weight a
// slot), each caller's calls in arrival order.
func (l *Window) dispatch(key string, w *window, now time.Time) {
	for len(w.aheadQ) > 0 {
		id, _, ok := l.take(w, w.internal, now, true)
		if !ok {
			break
		}
		wt := w.aheadQ[0]
		w.aheadQ = w.aheadQ[1:]
		wt.id, wt.admitted = id, true
		close(wt.ready)
	}
	if w.waiting > 0 && w.lim.Shares.Reserved() > 0 {
		for _, p := range w.parties {
			for len(p.queue) > 0 && p.canReserve() {
				if !l.admitHead(w, p, now) {
					break
				}
			}
		}
	}
	for len(w.aheadQ) == 0 && w.waiting > 0 {
		var next *party
		for _, p := range w.parties {
			if len(p.queue) == 0 || p.atMax() {
				continue
			}
			if next == nil || p.pass < next.pass || (p.pass == next.pass && p.queue[0].seq < next.queue[0].seq) {
				next = p
			}
		}
		if next == nil || !l.admitHead(w, next, now) {
			break
		}
		next.pass += 1 / next.share.Weight
		w.vtime = next.pass
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
	if w.waiting+len(w.aheadQ) == 0 {
		return
	}
	at, known := w.nextFree(now, 0)
	if w.lim.Shares != nil {
		// Reserved and capped callers wait for a slot of their own, not
		// the line's: wake at the first end of any hold.
		at, known = w.nextEvent(now)
	}
	if !known {
		return
	}
	w.timer = time.AfterFunc(max(at.Sub(now), 0), func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.dispatch(key, w, l.now())
	})
}

// ticket is called after l.mu is released: it reads the caller's lim, not
// the window's (a reload may change that).
func (l *Window) ticket(key string, lim Quota, id uint64) Ticket {
	if lim.Requests <= 0 {
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
	s, ok := w.inflight[t.id]
	if !ok {
		return // released already: only the first release counts
	}
	delete(w.inflight, t.id)
	now := l.now()
	if sent {
		w.keep(s, now.Add(w.lim.Per+l.margin))
	} else {
		w.drop(s)
	}
	l.dispatch(t.key, w, now)
}
