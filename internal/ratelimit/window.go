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
// Callers that wait are admitted in arrival order, after any call marked
// Ahead (keybroker's credential probes); a call that would wait
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
	lim Limit
	// inflight are the calls admitted whose reply has not come back;
	// ends are when the released ones' holds end, oldest first (releases
	// come in time order, so appending keeps them sorted).
	inflight map[uint64]struct{}
	ends     []time.Time
	head     int           // ends[head:] are live
	bucket   *rate.Limiter // Burst < Requests: smoothing; nil otherwise
	paused   time.Time
	queue    []*waiter // FIFO, the Ahead calls first
	ahead    int       // how many of queue are Ahead calls
	timer    *time.Timer
	used     time.Time
}

type waiter struct {
	ready    chan struct{}
	admitted bool
	ahead    bool
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
	if len(w.queue) == 0 || lim.Ahead {
		if id, ok := l.admit(w, start); ok {
			res := w.result(start, 0)
			l.mu.Unlock()
			return res, l.ticket(key, lim, id), nil
		}
	}
	pos := len(w.queue)
	if lim.Ahead {
		pos = w.ahead
	}
	at, known := w.nextFree(start, pos)
	if lim.MaxWait <= 0 || (known && at.Sub(start) > lim.MaxWait) {
		err := w.refusal(start, at, known)
		l.mu.Unlock()
		return Result{}, Ticket{}, err
	}
	wt := &waiter{ready: make(chan struct{}), ahead: lim.Ahead}
	// An ahead call goes behind the ahead calls already waiting, before
	// every other.
	w.queue = slices.Insert(w.queue, pos, wt)
	if wt.ahead {
		w.ahead++
	}
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
		return w.result(now, now.Sub(start)), l.ticket(key, lim, wt.id), nil
	}
	for i, q := range w.queue {
		if q == wt {
			w.queue = append(w.queue[:i], w.queue[i+1:]...)
			if wt.ahead {
				w.ahead--
			}
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
		w = &window{used: now, inflight: map[uint64]struct{}{}}
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
	return w.held(), w.lim.Requests
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
		w = &window{inflight: map[uint64]struct{}{}}
		l.keys[key] = w
	}
	// How long one call may wait, and whether it goes ahead, are that
	// call's business (a credential probe): no change of the window.
	lim.MaxWait, lim.Ahead = 0, false
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
		if w.held() == 0 && len(w.queue) == 0 && now.After(w.paused) && now.Sub(w.used) > max(time.Minute, 2*w.lim.Per) {
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
	if w.held() >= w.lim.Requests {
		return 0, false
	}
	if w.bucket != nil && !w.bucket.AllowN(now, 1) {
		return 0, false
	}
	w.inflight[l.nextID] = struct{}{}
	return l.nextID, true
}

// held is how many calls hold a slot.
func (w *window) held() int { return len(w.inflight) + len(w.ends) - w.head }

// expire drops the released slots whose hold has ended: amortized O(1).
func (w *window) expire(now time.Time) {
	for w.head < len(w.ends) && !w.ends[w.head].After(now) {
		w.head++
	}
	if w.head > 0 && w.head*2 >= len(w.ends) {
		n := copy(w.ends, w.ends[w.head:])
		w.ends, w.head = w.ends[:n], 0
	}
}

func (w *window) free(id uint64) { delete(w.inflight, id) }

// hold moves an in-flight call to the released ones, held until end.
func (w *window) hold(id uint64, end time.Time) {
	delete(w.inflight, id)
	if n := len(w.ends); n > w.head && end.Before(w.ends[n-1]) {
		end = w.ends[n-1] // keep them sorted (a shorter Per after a reload): hold longer, never shorter
	}
	w.ends = append(w.ends, end)
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

// refusal is the 429 for a call that cannot go within MaxWait: retry when
// a slot frees (at, when known; else the earliest known end, else Per).
func (w *window) refusal(now, at time.Time, known bool) *RefusedError {
	retry := w.lim.Per
	if known {
		retry = at.Sub(now)
	} else if end, ok := w.nthEnd(1); ok && end.Sub(now) < retry {
		retry = end.Sub(now)
	}
	return &RefusedError{RetryAfter: max(retry, time.Millisecond), Limit: w.lim.Requests, Reset: max(retry, 0),
		Paused: w.paused.After(now) && !at.After(w.paused)}
}

func (w *window) result(now time.Time, waited time.Duration) Result {
	r := Result{Waited: waited, Limit: w.lim.Requests}
	if w.lim.Requests > 0 {
		r.Remaining = max(0, w.lim.Requests-w.held())
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
		if head.ahead {
			w.ahead--
		}
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
// false when fewer than n slots have a known end (the rest are in flight).
func (w *window) nthEnd(n int) (time.Time, bool) {
	if i := w.head + n - 1; i < len(w.ends) {
		return w.ends[i], true
	}
	return time.Time{}, false
}

// ticket is called after l.mu is released: it reads the caller's lim, not
// the window's (a reload may change that).
func (l *Window) ticket(key string, lim Limit, id uint64) Ticket {
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
	if _, ok := w.inflight[t.id]; !ok {
		return // released already: only the first release counts
	}
	now := l.now()
	if sent {
		w.hold(t.id, now.Add(w.lim.Per+l.margin))
	} else {
		w.free(t.id)
	}
	l.dispatch(t.key, w, now)
}
