package ratelimit

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// gcra is the Generic Cell Rate Algorithm, a token bucket kept as one
// number per key: the theoretical arrival time (TAT) of the next call.
// Emission interval T = 1/rate; a call at t conforms once
// t >= max(TAT, t) - (burst-1)·T. That admits exactly what Local admits:
// burst calls at once, then one per T, so B + W/T <= requests in any window
// W, whichever replica sends. It runs atomically in Redis, on Redis's clock
// (TIME), so replicas' clocks do not matter.
//
// A call that would wait longer than max_wait reserves nothing. A call that
// may wait reserves its slot at once (TAT moves on) and the replica sleeps
// until then. A pause (after a vendor 429) is a key with an expiry.
//
// KEYS[1] tat key, KEYS[2] pause key
// ARGV[1] interval µs (0: no quota), ARGV[2] burst, ARGV[3] max wait µs,
// ARGV[4] floor µs: no call before now+floor (the hand-off from the local
// fallback, whose last reserved call this replica knows and Redis does not)
// returns {allowed (0/1), wait µs or retry-after µs, paused (0/1), remaining}
const gcraScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local maxwait = tonumber(ARGV[3])
local start = now + tonumber(ARGV[4])
local paused = 0
local pttl = redis.call('PTTL', KEYS[2])
if pttl > 0 and now + pttl * 1000 > start then
  start = now + pttl * 1000
  paused = 1
  if pttl * 1000 > maxwait then
    return {0, pttl * 1000, 1, 0}
  end
end
if interval == 0 then
  return {1, start - now, paused, burst}
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < start then tat = start end
local earliest = tat - (burst - 1) * interval
if earliest < start then earliest = start end
local wait = earliest - now
if wait > maxwait then
  return {0, wait, paused, 0}
end
local newtat = tat + interval
local ttl = math.ceil((newtat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', newtat), 'PX', ttl)
local remaining = math.floor((burst * interval - (newtat - now)) / interval)
if remaining < 0 then remaining = 0 end
return {1, wait, paused, remaining}
`

// pauseScript extends a pause to ARGV[1] ms from now, never shortens it.
const pauseScript = `
local pttl = redis.call('PTTL', KEYS[1])
local want = tonumber(ARGV[1])
if pttl < want then redis.call('SET', KEYS[1], '1', 'PX', want) end
return 1
`

// RedisOptions configure the shared limiter.
type RedisOptions struct {
	Address  string
	Password string
	TLS      bool
	// Prefix namespaces the keys. Default "keybroker:rl:".
	Prefix string
	// Replicas divides each quota in the local fallback. Default 1.
	Replicas int
	// Timeout bounds one Redis round trip; past it the call falls back.
	// Default 250ms.
	Timeout time.Duration
	Log     *zap.Logger
	// OnFallback, when set, is told when the limiter leaves Redis for the
	// local fallback (true) and returns to it (false).
	OnFallback func(fallback bool, reason string)
}

// Redis keeps quotas in Redis, shared by every replica. When Redis cannot be
// reached it falls back to a local limiter with each quota divided by
// Replicas, tries Redis again at most once a second, and returns to it as
// soon as it answers. It never fails a call because Redis is down.
type Redis struct {
	opts   RedisOptions
	client *redis.Client
	gcra   *redis.Script
	pause  *redis.Script
	local  *Local

	fallback  atomic.Bool
	mu        sync.Mutex
	lastProbe time.Time
	// last is, per key, when this replica's latest admitted call goes out
	// and the interval after it. A switch between Redis and the local
	// fallback starts after it, so calls reserved in one mode never overlap
	// calls admitted in the other.
	last map[string]handoff
}

type handoff struct {
	at       time.Time
	interval time.Duration
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
	return &Redis{opts: opts, client: redis.NewClient(ro), gcra: redis.NewScript(gcraScript),
		pause: redis.NewScript(pauseScript), local: NewLocal(nil), last: map[string]handoff{}}
}

// Close closes the connections.
func (r *Redis) Close() error { return r.client.Close() }

// InFallback reports whether quotas are currently kept locally.
func (r *Redis) InFallback() bool { return r.fallback.Load() }

// Wait admits one call under key's limit, as Local.Wait does, with the
// quota shared through Redis.
func (r *Redis) Wait(ctx context.Context, key string, lim Limit) (Result, error) {
	if r.fallback.Load() && !r.probeDue() {
		return r.waitLocal(ctx, key, lim)
	}
	res, err := r.decide(ctx, key, lim)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		r.setFallback(true, err)
		return r.waitLocal(ctx, key, lim)
	}
	r.setFallback(false, nil)
	if res.refused != nil {
		return Result{}, res.refused
	}
	r.note(key, time.Now().Add(res.wait), lim)
	// A slot reserved in Redis is not given back if the caller leaves: the
	// quota errs on the side of sending less, never more.
	if err := sleepFor(ctx, res.wait, nil); err != nil {
		return Result{}, err
	}
	return res.Result, nil
}

func (r *Redis) waitLocal(ctx context.Context, key string, lim Limit) (Result, error) {
	share := r.share(lim)
	res, cancel, err := r.local.reserve(key, share)
	if err != nil {
		return res, err
	}
	r.note(key, time.Now().Add(res.Waited), share)
	return res, sleepFor(ctx, res.Waited, cancel)
}

func (r *Redis) note(key string, at time.Time, lim Limit) {
	if lim.Requests <= 0 {
		return
	}
	iv := time.Duration(float64(time.Second) / float64(lim.Rate()))
	r.mu.Lock()
	if at.After(r.last[key].at) {
		r.last[key] = handoff{at: at, interval: iv}
	}
	r.mu.Unlock()
}

// floor is how long a Redis decision for key must hold off after a spell
// on the local fallback.
func (r *Redis) floor(key string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.last[key]
	if !ok {
		return 0
	}
	return max(0, time.Until(h.at.Add(h.interval)))
}

type decision struct {
	Result
	wait    time.Duration
	refused *RefusedError
}

func (r *Redis) decide(ctx context.Context, key string, lim Limit) (decision, error) {
	interval := int64(0)
	if rate := lim.Rate(); lim.Requests > 0 && rate > 0 {
		interval = int64(float64(time.Second/time.Microsecond) / float64(rate))
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	vals, err := r.gcra.Run(ctx, r.client, []string{r.opts.Prefix + "tat:" + key, r.opts.Prefix + "pause:" + key},
		interval, lim.burst(), lim.MaxWait.Microseconds(), r.floor(key).Microseconds()).Int64Slice()
	if err != nil {
		return decision{}, err
	}
	if len(vals) != 4 {
		return decision{}, fmt.Errorf("redis limiter: unexpected reply %v", vals)
	}
	d := time.Duration(vals[1]) * time.Microsecond
	if vals[0] == 0 {
		return decision{refused: &RefusedError{RetryAfter: max(d, time.Millisecond), Limit: lim.Requests, Reset: d, Paused: vals[2] == 1}}, nil
	}
	return decision{wait: d, Result: Result{Waited: d, Limit: lim.Requests, Remaining: int(vals[3])}}, nil
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

// share is lim divided by the replicas, for the local fallback: each
// replica keeps requests/replicas per window, so together they stay under.
func (r *Redis) share(lim Limit) Limit {
	if lim.Requests <= 0 || r.opts.Replicas <= 1 {
		return lim
	}
	l := lim
	l.Requests = max(1, lim.Requests/r.opts.Replicas)
	if l.Burst >= l.Requests {
		l.Burst = max(1, l.Requests-1)
	}
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
	if on {
		r.mu.Lock()
		r.lastProbe = time.Now()
		// Calls already reserved through Redis go out first.
		for key, h := range r.last {
			r.local.Pause(key, h.at.Add(h.interval))
		}
		r.mu.Unlock()
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
