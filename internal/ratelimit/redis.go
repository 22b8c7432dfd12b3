package ratelimit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RedisOptions configure the shared limiter.
type RedisOptions struct {
	Address  string
	Password string
	TLS      bool
	// Prefix namespaces the keys. Default "keybroker:rl:".
	Prefix string
	// Replicas divides each quota in the local fallback. Default 1.
	Replicas int
	// Margin is what a slot is held beyond Per. Default DefaultMargin.
	Margin time.Duration
	// InFlight bounds how long a call's slot is held while no reply has
	// come back (a replica that dies mid-call). Default 2m, beyond Per.
	InFlight time.Duration
	// Timeout bounds one Redis round trip; past it the call falls back.
	// Default 250ms.
	Timeout time.Duration
	Log     *zap.Logger
	// OnFallback, when set, is told when the limiter leaves Redis for the
	// local fallback (true) and returns to it (false).
	OnFallback func(fallback bool, reason string)
}

// Redis keeps vendor quotas as sliding windows in Redis, shared by every
// replica, with Window's semantics. Within a replica, callers waiting on
// one key are served in arrival order.
//
// When Redis cannot be reached it falls back to a local Window with each
// quota divided by Replicas, tries Redis again at most once a second, and
// returns to it as soon as it answers; it never fails a call because Redis
// is down. The hand-offs keep the windows exact: on entering the fallback a
// key is paused for one window (the calls other replicas sent through Redis
// are unknown here, and have left the vendor's window by then), and for one
// window after returning each call must pass both Redis and the local
// share (the calls sent locally meanwhile are not in Redis).
type Redis struct {
	opts       RedisOptions
	client     *redis.Client
	acquire    *redis.Script
	rel        *redis.Script
	share      *redis.Script
	relShare   *redis.Script
	shareUsage *redis.Script
	usage      *redis.Script
	pause      *redis.Script
	local      *Window
	scaled     scaledShares

	fallback atomic.Bool
	nextID   atomic.Uint64
	replica  string

	mu         sync.Mutex
	lastProbe  time.Time
	fallbackAt time.Time
	keys       map[string]*redisKey
}

// redisKey is a key's state in this replica.
type redisKey struct {
	gate    fairGate // only the gate's holder asks Redis; the others wait in (fair) order
	lim     Quota
	callers map[string]bool // callers seen under Shares (metrics)
	dualTil time.Time       // after a fallback: the local share applies too until then
}

// NewRedis returns a limiter using the Redis at opts.Address. It does not
// connect until the first call.
func NewRedis(opts RedisOptions) *Redis {
	if opts.Prefix == "" {
		opts.Prefix = "keybroker:rl:"
	}
	if opts.Replicas < 1 {
		opts.Replicas = 1
	}
	if opts.Margin <= 0 {
		opts.Margin = DefaultMargin
	}
	if opts.InFlight <= 0 {
		opts.InFlight = 2 * time.Minute
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 250 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	ro := &redis.Options{
		Addr: opts.Address, Password: opts.Password,
		DialTimeout: opts.Timeout, ReadTimeout: opts.Timeout, WriteTimeout: opts.Timeout,
		MaxRetries: -1, DialerRetries: 1, PoolSize: 32, ContextTimeoutEnabled: true,
	}
	if opts.TLS {
		ro.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &Redis{opts: opts, client: redis.NewClient(ro),
		acquire: redis.NewScript(acquireScript), rel: redis.NewScript(releaseScript),
		share: redis.NewScript(shareScript), relShare: redis.NewScript(releaseShareScript), shareUsage: redis.NewScript(shareUsageScript),
		usage: redis.NewScript(usageScript), pause: redis.NewScript(pauseScript),
		local: NewWindow(nil, opts.Margin), keys: map[string]*redisKey{},
		replica: strconv.FormatInt(time.Now().UnixNano(), 36)}
}

// Close closes the connections.
func (r *Redis) Close() error { return r.client.Close() }

// InFallback reports whether quotas are currently kept locally.
func (r *Redis) InFallback() bool { return r.fallback.Load() }

// Acquire admits one call under key's limit, as Window.Acquire does, with
// the quota shared through Redis. Under Shares, a call that can use its
// caller's reserve asks Redis at once, past this replica's line; the
// others take turns at the gate, by weight.
func (r *Redis) Acquire(ctx context.Context, key string, lim Quota, c Call) (Result, Ticket, error) {
	k := r.key(key, lim, c)
	start := time.Now()
	deadline := start.Add(c.MaxWait)
	if lim.Shares != nil && !c.Ahead && lim.Shares.Of(c.Caller).Reserve > 0 {
		if r.fallback.Load() && !r.probeDue() {
			return r.acquireLocal(ctx, key, lim, c, deadline)
		}
		res, tk, wait, class, err := r.decide(ctx, key, k, lim, c, true)
		if err != nil {
			if ctx.Err() != nil {
				return Result{}, Ticket{}, ctx.Err()
			}
			r.setFallback(true, err)
			return r.acquireLocal(ctx, key, lim, c, deadline)
		}
		r.setFallback(false, nil)
		if wait == 0 {
			res.Waited = time.Since(start)
			return res.Result, tk, nil
		}
		if class == classAtMax && time.Now().Add(max(wait, 0)).After(deadline) {
			return Result{}, Ticket{}, &RefusedError{RetryAfter: max(wait, time.Millisecond), Limit: lim.Requests, Share: true}
		}
	}
	weight := lim.Shares.Of(c.Caller).Weight
	caller := ""
	if lim.Shares != nil {
		caller = c.Caller
	}
	atMax := false
	for {
		if err := k.gate.enter(ctx, caller, weight, deadline); err != nil {
			if errors.Is(err, errGateTimeout) {
				return Result{}, Ticket{}, &RefusedError{RetryAfter: max(c.MaxWait, time.Second), Limit: lim.Requests, Share: atMax}
			}
			return Result{}, Ticket{}, err
		}
		res, tk, again, err := r.atGate(ctx, key, k, lim, c, start, deadline)
		k.gate.leave()
		if !again {
			return res, tk, err
		}
		atMax = true
		// At its own max: out of the line until one of its slots frees.
		if err := sleepFor(ctx, 50*time.Millisecond, nil); err != nil {
			return Result{}, Ticket{}, err
		}
	}
}

// atGate asks Redis until the call is admitted or refused, holding the
// gate. again: the caller is at its own max; let the others go first.
func (r *Redis) atGate(ctx context.Context, key string, k *redisKey, lim Quota, c Call, start, deadline time.Time) (Result, Ticket, bool, error) {
	for {
		if r.fallback.Load() && !r.probeDue() {
			res, tk, err := r.acquireLocal(ctx, key, lim, c, deadline)
			return res, tk, false, err
		}
		res, tk, wait, class, err := r.decide(ctx, key, k, lim, c, false)
		if err != nil {
			if ctx.Err() != nil {
				return Result{}, Ticket{}, false, ctx.Err()
			}
			r.setFallback(true, err)
			res, tk, err := r.acquireLocal(ctx, key, lim, c, deadline)
			return res, tk, false, err
		}
		r.setFallback(false, nil)
		if wait == 0 {
			res.Waited = time.Since(start)
			return res.Result, tk, false, nil
		}
		// Not now: wait for the slot that frees first (or, with every slot
		// in flight, look again shortly), unless that is past MaxWait.
		step := wait
		if wait < 0 {
			step = 10 * time.Millisecond
		}
		if time.Now().Add(step).After(deadline) {
			retry := wait
			if wait < 0 {
				retry = lim.Per
			}
			return Result{}, Ticket{}, false, &RefusedError{RetryAfter: max(retry, time.Millisecond), Limit: lim.Requests,
				Reset: max(retry, 0), Paused: res.paused, Share: class == classAtMax}
		}
		if class == classAtMax {
			return Result{}, Ticket{}, true, nil
		}
		if err := sleepFor(ctx, min(step, 100*time.Millisecond), nil); err != nil {
			return Result{}, Ticket{}, false, err
		}
	}
}

type redisResult struct {
	Result
	paused bool
}

// decide asks Redis once. wait is 0 when admitted, else how long until a
// slot frees (-1: unknown); class says what decided (shareScript's).
// reserveOnly: admit only into the caller's reserve.
func (r *Redis) decide(ctx context.Context, key string, k *redisKey, lim Quota, c Call, reserveOnly bool) (redisResult, Ticket, time.Duration, int, error) {
	member := r.memberOf()
	interval := int64(0)
	if b := lim.burst(); lim.Burst > 0 && b < lim.Requests && lim.Requests > 0 {
		interval = lim.Per.Microseconds() / int64(lim.Requests)
	}
	requests := lim.Requests
	if requests <= 0 {
		requests = 1 << 30 // no quota: only pauses hold calls
	}
	hold := (lim.Per + r.opts.Margin + r.opts.InFlight).Microseconds()
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	var vals []int64
	var err error
	if lim.Shares != nil && lim.Requests > 0 {
		sh := lim.Shares.Of(c.Caller)
		only := 0
		if reserveOnly {
			only = 1
		}
		vals, err = r.share.Run(ctx, r.client, r.shareKeys(key, lim, c.Caller), requests, member, hold, interval, lim.burst(),
			sh.Reserve, sh.Max, lim.Requests-lim.Shares.Reserved(), only).Int64Slice()
	} else {
		vals, err = r.acquire.Run(ctx, r.client, r.redisKeys(key), requests, member, hold, interval, lim.burst()).Int64Slice()
	}
	if err != nil {
		return redisResult{}, Ticket{}, 0, 0, err
	}
	if len(vals) != 5 {
		return redisResult{}, Ticket{}, 0, 0, fmt.Errorf("redis limiter: unexpected reply %v", vals)
	}
	class := int(vals[4])
	res := redisResult{Result: Result{Limit: lim.Requests, Remaining: int(vals[3]), Reserved: class == classReserved}, paused: vals[2] == 1}
	if vals[0] == 0 {
		wait := time.Duration(vals[1]) * time.Microsecond
		if vals[1] < 0 {
			wait = -1
		}
		return res, Ticket{}, max(wait, -1), class, nil
	}
	tk := Ticket{r: r, key: ticketKey(key, member, lim, c.Caller)}
	if lim.Requests <= 0 {
		tk = Ticket{}
	}
	// Back from the fallback (this very call may be the probe that finds
	// Redis again): the local share must agree too.
	if r.fallback.Load() || time.Now().Before(r.dualUntil(k)) {
		_, ltk, lerr := r.local.Acquire(ctx, key, r.localShare(lim), Call{Ahead: c.Ahead, Caller: c.Caller})
		if lerr != nil {
			tk.Release(false)
			if ref, ok := IsRefused(lerr); ok {
				return res, Ticket{}, ref.RetryAfter, class, nil
			}
			return res, Ticket{}, 10 * time.Millisecond, class, nil
		}
		tk = Ticket{r: pair{tk, ltk}, key: key}
	} else if lim.Shares != nil && tk.r != nil {
		// Under Shares the replica keeps a shadow of its own calls, so
		// that in a fallback its callers' reserved calls (which the
		// hand-off hold lets through) count what it already sent.
		tk = Ticket{r: pair{tk, r.local.Record(key, r.localShare(lim), c, class == classReserved)}, key: key}
	}
	return res, tk, 0, class, nil
}

// pair releases two tickets together (Redis and the local share).
type pair [2]Ticket

func (p pair) release(_ Ticket, sent bool) {
	p[0].Release(sent)
	p[1].Release(sent)
}

func (r *Redis) release(t Ticket, sent bool) {
	key, member, caller, shared := splitTicket(t.key)
	flag := 0
	if sent {
		flag = 1
	}
	hold := r.limitOf(key).Per + r.opts.Margin
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	keys := r.redisKeys(key)
	var err error
	if shared {
		ck := r.callerKeys(key, caller)
		err = r.relShare.Run(ctx, r.client, []string{keys[0], keys[1], ck[0], ck[1], ck[2], ck[3]}, member, hold.Microseconds(), flag).Err()
	} else {
		err = r.rel.Run(ctx, r.client, keys[:2], member, hold.Microseconds(), flag).Err()
	}
	if err != nil {
		// The slot stays held until its provisional end: fewer calls, never more.
		r.opts.Log.Warn("could not release a quota slot in redis", zap.String("key", key), zap.Error(err))
	}
}

func (r *Redis) acquireLocal(ctx context.Context, key string, lim Quota, c Call, deadline time.Time) (Result, Ticket, error) {
	c.MaxWait = max(0, time.Until(deadline))
	return r.local.Acquire(ctx, key, r.localShare(lim), c)
}

func (r *Redis) redisKeys(key string) []string {
	p := r.opts.Prefix
	return []string{p + "done:" + key, p + "fly:" + key, p + "pause:" + key, p + "cell:" + key}
}

func (r *Redis) key(key string, lim Quota, c Call) *redisKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[key]
	if !ok {
		k = &redisKey{}
		r.keys[key] = k
		if r.fallback.Load() {
			// First seen during the fallback: other replicas' calls may be
			// in the window, as for every key at the switch.
			r.local.Hold(key, r.fallbackAt.Add(lim.Per+r.opts.Margin+handoffSlack))
		}
	}
	if lim.Shares != nil && !c.Ahead && !k.callers[c.Caller] && len(k.callers) < 1024 {
		if k.callers == nil {
			k.callers = map[string]bool{}
		}
		k.callers[c.Caller] = true // for ShareUsage
	}
	k.lim = lim
	return k
}

func (r *Redis) limitOf(key string) Quota {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k, ok := r.keys[key]; ok {
		return k.lim
	}
	return Quota{}
}

func (r *Redis) dualUntil(k *redisKey) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return k.dualTil
}

// Usage returns how many calls hold a slot under key, all replicas
// together (this replica's local share while Redis is away).
func (r *Redis) Usage(key string) (inUse, requests int) {
	lim := r.limitOf(key)
	if r.fallback.Load() {
		in, _ := r.local.Usage(key)
		return in, lim.Requests
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	n, err := r.usage.Run(ctx, r.client, r.redisKeys(key)[:2]).Int()
	if err != nil {
		in, _ := r.local.Usage(key)
		return in, lim.Requests
	}
	return n, lim.Requests
}

// Pause holds every call under key, on every replica, until until.
func (r *Redis) Pause(key string, until time.Time) {
	r.local.Pause(key, until) // also locally, in case Redis is away
	ms := time.Until(until).Milliseconds()
	if ms <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	if err := r.pause.Run(ctx, r.client, []string{r.opts.Prefix + "pause:" + key}, ms).Err(); err != nil {
		r.opts.Log.Warn("could not share a vendor pause through redis", zap.String("key", key), zap.Error(err))
	}
}

// localShare is lim divided by the replicas, for the local fallback: each
// replica keeps requests/replicas per window, and its part of each
// caller's reserve and max (Shares.Scaled), so together they stay under.
func (r *Redis) localShare(lim Quota) Quota {
	l := lim
	if lim.Requests <= 0 || r.opts.Replicas <= 1 {
		return l
	}
	l.Requests = max(1, lim.Requests/r.opts.Replicas)
	if l.Burst > l.Requests {
		l.Burst = l.Requests
	}
	l.Shares = r.scaled.of(lim.Shares, r.opts.Replicas, l.Requests)
	return l
}

func (r *Redis) probeDue() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastProbe) < time.Second {
		return false
	}
	r.lastProbe = time.Now()
	return true
}

func (r *Redis) setFallback(on bool, err error) {
	if r.fallback.Swap(on) == on {
		return
	}
	now := time.Now()
	r.mu.Lock()
	r.lastProbe = now
	if on {
		r.fallbackAt = now
	}
	for key, k := range r.keys {
		window := k.lim.Per + r.opts.Margin + handoffSlack
		if on {
			// Calls other replicas sent through Redis are unknown here: wait
			// until they have left the vendor's window. A caller's reserved
			// calls are not held: each replica keeps its part of the
			// reserve, counting its own calls (the shadow).
			r.local.Hold(key, now.Add(window))
		} else {
			// Calls other replicas sent locally are unknown to Redis: keep
			// to the local share too until they have left the window, and
			// as long again for replicas that find Redis back later.
			k.dualTil = now.Add(2 * window)
		}
	}
	r.mu.Unlock()
	if on {
		r.opts.Log.Error("redis unreachable: rate limits fall back to local quotas divided by replicas",
			zap.Int("replicas", r.opts.Replicas), zap.Error(err))
		if r.opts.OnFallback != nil {
			r.opts.OnFallback(true, err.Error())
		}
		return
	}
	r.opts.Log.Info("redis reachable again: rate limits shared through redis")
	if r.opts.OnFallback != nil {
		r.opts.OnFallback(false, "")
	}
}

// RouteRedisLogs sends the Redis client's own messages (dial failures) to
// log instead of the standard logger. go-redis keeps its logger in a
// package variable, so cmd/proxy calls this once, at start.
func RouteRedisLogs(log *zap.Logger) { redis.SetLogger(redisLog{log}) }

type redisLog struct{ l *zap.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	r.l.Warn("redis client", zap.String("detail", fmt.Sprintf(format, v...)))
}
