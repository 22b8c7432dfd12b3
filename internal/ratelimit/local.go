// Package ratelimit keeps calls under quotas: a caller's own limit and an
// upstream vendor's quota, locally (golang.org/x/time/rate) or shared by
// every replica through Redis. A Quota is the limit as vendors state it; a
// Call is what one call brings to it. A call waits for its turn up to its
// MaxWait, else it is refused with the time after which to retry. It also
// pauses an upstream that answered 429. It does not know about HTTP.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Quota is a limit as vendors state it: Requests per Per.
type Quota struct {
	Requests int
	Per      time.Duration
	// Burst is how many calls may go back to back (at least 1).
	Burst int
	// Shares split an upstream quota between callers (nil: first come,
	// first served). Window and Redis only.
	Shares *Shares
}

// Call is what one call brings to a quota: how long it may wait, whether
// it goes ahead of the line, and who makes it. They are the call's, not
// the quota's: one quota serves calls that differ in all three.
type Call struct {
	// MaxWait is how long the call may wait for its turn; 0 refuses at
	// once.
	MaxWait time.Duration
	// Ahead puts the call ahead of the callers waiting in line (Window
	// only; keybroker's credential probe): it takes the next free slot.
	// It never takes a caller's reserve.
	Ahead bool
	// Caller is who makes the call, for the quota's Shares.
	Caller string
}

// Rate is the token refill rate that keeps every window of length Per at or
// under Requests, bursts included. A token bucket of capacity B refilling at
// r admits at most B + r·W calls in any window of length W; solving
// B + r·Per = Requests gives r = (Requests − Burst) / Per. With the default
// Burst of 1 that is (Requests−1)/Per: 59 per minute for Huntress's 60, 98%
// of the quota, with the 60th slot as margin for network jitter. Requests 1
// (so Burst 1) gives 1/Per: calls at least Per apart. A Quota without
// Requests is no quota: rate.Inf (vendor 429 pauses still apply to it).
func (l Quota) Rate() rate.Limit {
	if l.Per <= 0 || l.Requests <= 0 {
		return rate.Inf
	}
	n := l.Requests - l.burst()
	if l.Requests == 1 {
		n = 1
	}
	return rate.Limit(float64(n) / l.Per.Seconds())
}

func (l Quota) burst() int {
	if l.Burst < 1 {
		return 1
	}
	return l.Burst
}

// Result describes an admitted call.
type Result struct {
	// Waited is how long the call waited for its turn.
	Waited time.Duration
	// Limit, Remaining and Reset feed the RateLimit-* headers: the quota,
	// the calls that could go now (with Shares: this caller's unused
	// reserve and the free shared slots, capped by its Max), and the time
	// until the bucket is full.
	Limit     int
	Remaining int
	Reset     time.Duration
	// Reserved: the call holds one of its caller's reserved slots.
	Reserved bool
}

// RefusedError is returned when a call would wait longer than MaxWait, or
// the upstream is paused after a vendor 429 for longer than that.
type RefusedError struct {
	// RetryAfter is when a retry can expect to be admitted.
	RetryAfter time.Duration
	Limit      int
	Reset      time.Duration
	// Paused is true when the upstream is paused by a vendor 429.
	Paused bool
	// Share is true when the caller holds its share's Max: its own cap,
	// not the upstream's quota, refused it.
	Share bool
}

func (e *RefusedError) Error() string {
	if e.Paused {
		return fmt.Sprintf("upstream paused after vendor 429; retry after %s", e.RetryAfter.Round(time.Millisecond))
	}
	if e.Share {
		return fmt.Sprintf("the caller's share of the quota is used up; retry after %s", e.RetryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("rate limited; retry after %s", e.RetryAfter.Round(time.Millisecond))
}

// IsRefused reports whether err is a RefusedError and returns it.
func IsRefused(err error) (*RefusedError, bool) {
	var r *RefusedError
	ok := errors.As(err, &r)
	return r, ok
}

// Local keeps quotas in this process. Keys are independent buckets (one per
// upstream, one per caller). Buckets idle for longer than it takes them to
// refill are dropped, so memory stays bounded by the active keys.
type Local struct {
	now func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim         *rate.Limiter
	limit       Quota
	lastUsed    time.Time
	pausedUntil time.Time
}

// NewLocal returns an empty local limiter; now is its clock (time.Now).
func NewLocal(now func() time.Time) *Local {
	if now == nil {
		now = time.Now
	}
	return &Local{now: now, buckets: map[string]*bucket{}}
}

// Wait admits one call under key's quota, waiting up to c.MaxWait. The
// wait ends early, giving the slot back, when ctx ends.
func (l *Local) Wait(ctx context.Context, key string, lim Quota, c Call) (Result, error) {
	res, cancel, err := l.reserve(key, lim, c.MaxWait)
	if err != nil {
		return res, err
	}
	return res, sleepFor(ctx, res.Waited, cancel)
}

// Acquire is Wait for the Limiter interface the proxy shares with Window
// and Redis: a token bucket holds nothing after admission, so its Ticket
// is empty.
func (l *Local) Acquire(ctx context.Context, key string, lim Quota, c Call) (Result, Ticket, error) {
	res, err := l.Wait(ctx, key, lim, c)
	return res, Ticket{}, err
}

// reserve takes key's next slot and says how long until it; cancel gives
// the slot back; a call may wait up to maxWait for it.
func (l *Local) reserve(key string, lim Quota, maxWait time.Duration) (Result, func(), error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key, lim, now)
	var pause time.Duration
	if b.pausedUntil.After(now) {
		pause = b.pausedUntil.Sub(now)
	}
	if pause > maxWait {
		return Result{}, nil, &RefusedError{RetryAfter: pause, Limit: lim.Requests, Reset: pause, Paused: true}
	}
	// Reserve at the end of the pause, so that a paused bucket's calls are
	// spaced by its rate when the pause ends.
	at := now.Add(pause)
	r := b.lim.ReserveN(at, 1)
	delay := pause + r.DelayFrom(at)
	if !r.OK() || delay > maxWait {
		if r.OK() {
			r.CancelAt(at)
		}
		return Result{}, nil, &RefusedError{RetryAfter: max(delay, time.Millisecond), Limit: lim.Requests, Reset: l.resetLocked(b, now)}
	}
	res := Result{Waited: delay, Limit: lim.Requests, Reset: l.resetLocked(b, now)}
	res.Remaining = max(0, int(math.Floor(b.lim.TokensAt(now))))
	return res, func() { r.CancelAt(l.now()) }, nil
}

// sleepFor waits d, or until ctx ends (then it calls cancel).
func sleepFor(ctx context.Context, d time.Duration, cancel func()) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		if cancel != nil {
			cancel()
		}
		return ctx.Err()
	}
}

// Pause holds every call under key until until (a vendor answered 429).
func (l *Local) Pause(key string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		// No call yet: a placeholder that takes its limit on first use.
		b = &bucket{lim: rate.NewLimiter(rate.Inf, 1), lastUsed: l.now()}
		l.buckets[key] = b
	}
	if until.After(b.pausedUntil) {
		b.pausedUntil = until
	}
}

// Len returns the number of buckets held (for tests and metrics).
func (l *Local) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func (l *Local) bucketLocked(key string, lim Quota, now time.Time) *bucket {
	if now.Sub(l.lastSweep) > time.Minute {
		l.sweepLocked(now)
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(lim.Rate(), lim.burst()), limit: lim}
		l.buckets[key] = b
	} else if b.limit != lim {
		// The configuration changed (hot reload): keep the tokens, change
		// the rate and size.
		b.lim.SetLimitAt(now, lim.Rate())
		b.lim.SetBurstAt(now, lim.burst())
		b.limit = lim
	}
	b.lastUsed = now
	return b
}

// sweepLocked drops buckets unused for longer than a full refill and not
// paused: a new bucket starts full, so dropping them changes nothing.
func (l *Local) sweepLocked(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		idle := now.Sub(b.lastUsed)
		if idle > 2*b.limit.Per && idle > time.Minute && now.After(b.pausedUntil) {
			delete(l.buckets, k)
		}
	}
}

func (l *Local) resetLocked(b *bucket, now time.Time) time.Duration {
	missing := float64(b.limit.burst()) - b.lim.TokensAt(now)
	if missing <= 0 || b.lim.Limit() <= 0 {
		return 0
	}
	return time.Duration(missing / float64(b.lim.Limit()) * float64(time.Second))
}
