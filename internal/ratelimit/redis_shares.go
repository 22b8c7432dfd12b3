package ratelimit

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// shareScript is acquireScript for a quota split by Shares, decided
// atomically for every replica: the caller's slots (and its reserved
// ones) are sorted sets of their own, beside the quota's, so its Max and
// Reserve hold across replicas. A call uses its caller's reserve first,
// then a shared slot while the shared slots held (all slots less every
// caller's reserved ones) are fewer than the shared part of the quota.
//
// KEYS[1] released, KEYS[2] in flight, KEYS[3] pause, KEYS[4] smoothing,
// KEYS[5] the caller's released, KEYS[6] its in flight, KEYS[7] its
// reserved released, KEYS[8] its reserved in flight, KEYS[9..] the
// reserved sets (released, in flight) of every caller with a reserve.
// ARGV[1] requests, ARGV[2] member, ARGV[3] provisional hold µs,
// ARGV[4] smoothing interval µs (0: none), ARGV[5] burst, ARGV[6] reserve,
// ARGV[7] max (0: none), ARGV[8] shared slots, ARGV[9] 1: reserve only
// returns {admitted 0/1, wait µs (-1: unknown), paused 0/1, remaining,
// class}: class 1 a reserved slot, 0 a shared one (or the quota is full),
// 2 the caller is at its max, 3 no reserve left (reserve only).
const shareScript = pausedPrelude + `
for i = 1, #KEYS do
  if i ~= 3 and i ~= 4 then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now) end
end
local function card(a, b) return redis.call('ZCARD', a) + redis.call('ZCARD', b) end
local function first_end(k)
  local f = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if f[2] then return tonumber(f[2]) - now end
  return -1
end
local requests, reserve, maxc, cap = tonumber(ARGV[1]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local n, nc, ncr = card(KEYS[1], KEYS[2]), card(KEYS[5], KEYS[6]), card(KEYS[7], KEYS[8])
if maxc > 0 and nc >= maxc then
  return {0, first_end(KEYS[5]), 0, 0, 2}
end
local rsum = 0
for i = 9, #KEYS do rsum = rsum + redis.call('ZCARD', KEYS[i]) end
local hold = tonumber(ARGV[3])
local keep = math.ceil(hold / 1000) + 1000
local function add(k)
  redis.call('ZADD', k, now + hold, ARGV[2])
  if redis.call('PTTL', k) < keep then redis.call('PEXPIRE', k, keep) end
end
local function remaining(shared, mine, myreserved)
  local r = math.max(0, cap - shared) + math.max(0, reserve - myreserved)
  if maxc > 0 then r = math.min(r, maxc - mine) end
  return math.max(0, r)
end
if ncr < reserve and n < requests then
  add(KEYS[2]) add(KEYS[6]) add(KEYS[8])
  return {1, 0, 0, remaining(n - rsum, nc + 1, ncr + 1), 1}
end
if ARGV[9] == '1' then
  return {0, -1, 0, 0, 3}
end
if n - rsum >= cap or n >= requests then
  return {0, first_end(KEYS[1]), 0, 0, 0}
end
` + smoothingCell + `
add(KEYS[2]) add(KEYS[6])
return {1, 0, 0, remaining(n - rsum + 1, nc + 1, ncr), 0}
`

// releaseShareScript is releaseScript for a call under Shares: it leaves
// the caller's sets as it leaves the quota's.
// KEYS[1] released, KEYS[2] in flight, KEYS[3] the caller's released,
// KEYS[4] its in flight, KEYS[5] its reserved released, KEYS[6] its
// reserved in flight; ARGV[1] member, ARGV[2] hold µs, ARGV[3] sent (1/0)
const releaseShareScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local was = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local reserved = redis.call('ZREM', KEYS[6], ARGV[1])
if was == 1 and ARGV[3] == '1' then
  local hold = tonumber(ARGV[2])
  local want = math.ceil(hold / 1000) + 1000
  local function add(k)
    redis.call('ZADD', k, now + hold, ARGV[1])
    if redis.call('PTTL', k) < want then redis.call('PEXPIRE', k, want) end
  end
  add(KEYS[1]) add(KEYS[3])
  if reserved == 1 then add(KEYS[5]) end
end
return was
`

// Classes of a share decision (shareScript's last value).
const (
	classShared   = 0
	classReserved = 1
	classAtMax    = 2
	classNoRoom   = 3
)

// shareKeys are shareScript's keys for caller under key.
func (r *Redis) shareKeys(key string, lim Quota, caller string) []string {
	keys := append(r.redisKeys(key), r.callerKeys(key, caller)...)
	for _, c := range lim.Shares.Callers() {
		if lim.Shares.Of(c).Reserve > 0 {
			ck := r.callerKeys(key, c)
			keys = append(keys, ck[2], ck[3])
		}
	}
	return keys
}

// callerKeys are a caller's sets under key: released, in flight, and the
// same for its reserved slots.
func (r *Redis) callerKeys(key, caller string) []string {
	p := r.opts.Prefix + "c:" + key + ":" + caller + ":"
	return []string{p + "done", p + "fly", p + "rdone", p + "rfly"}
}

// fairGate lets one call of a replica at a time ask Redis for a key's slot,
// the waiting ones in weighted fair order by caller (each caller's calls
// in arrival order); without Shares, every call is one caller's: first
// come, first served.
type fairGate struct {
	mu      sync.Mutex
	busy    bool
	waiting int
	parties map[string]*gateParty
	vtime   float64
	seq     uint64
}

type gateParty struct {
	queue []*gateWaiter
	pass  float64
}

type gateWaiter struct {
	ch       chan struct{}
	seq      uint64
	weight   float64
	admitted bool
}

// enter waits for the gate until deadline or ctx ends.
func (g *fairGate) enter(ctx context.Context, caller string, weight float64, deadline time.Time) error {
	g.mu.Lock()
	if !g.busy && g.waiting == 0 {
		g.busy = true
		g.mu.Unlock()
		return nil
	}
	if g.parties == nil {
		g.parties = map[string]*gateParty{}
	}
	p := g.parties[caller]
	if p == nil {
		p = &gateParty{pass: g.vtime}
		g.parties[caller] = p
	}
	if len(p.queue) == 0 && p.pass < g.vtime {
		p.pass = g.vtime
	}
	g.seq++
	w := &gateWaiter{ch: make(chan struct{}), seq: g.seq, weight: weight}
	p.queue = append(p.queue, w)
	g.waiting++
	g.mu.Unlock()

	timer := time.NewTimer(max(time.Until(deadline), 0))
	defer timer.Stop()
	var err error
	select {
	case <-w.ch:
		return nil
	case <-timer.C:
		err = errGateTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	g.mu.Lock()
	if w.admitted {
		g.mu.Unlock()
		g.leave()
		return err
	}
	for i, x := range p.queue {
		if x == w {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			g.waiting--
			break
		}
	}
	g.mu.Unlock()
	return err
}

// errGateTimeout: the wait for the gate reached the call's deadline.
var errGateTimeout = errors.New("no turn at the gate within max_wait")

// leave hands the gate to the waiting caller with the least pass.
func (g *fairGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	var next *gateParty
	for _, p := range g.parties {
		if len(p.queue) == 0 {
			continue
		}
		if next == nil || p.pass < next.pass || (p.pass == next.pass && p.queue[0].seq < next.queue[0].seq) {
			next = p
		}
	}
	if next == nil {
		g.busy = false
		return
	}
	w := next.queue[0]
	next.queue = next.queue[1:]
	g.waiting--
	next.pass += 1 / w.weight
	g.vtime = next.pass
	w.admitted = true
	close(w.ch)
}

// ticketKey packs what a release needs: the key, the member and, under
// Shares, the caller.
func ticketKey(key, member string, lim Quota, caller string) string {
	if lim.Shares == nil {
		return key + "\x00" + member
	}
	return key + "\x00" + member + "\x00" + caller
}

// splitTicket unpacks ticketKey; shared says the call was under Shares.
func splitTicket(s string) (key, member, caller string, shared bool) {
	parts := strings.SplitN(s, "\x00", 3)
	key = parts[0]
	if len(parts) > 1 {
		member = parts[1]
	}
	if len(parts) > 2 {
		caller, shared = parts[2], true
	}
	return key, member, caller, shared
}

// scaledShares caches each Shares' local fallback split (a new pointer per
// call would look like a new limit to the local Window).
type scaledShares struct {
	mu sync.Mutex
	m  map[*Shares]*Shares
}

func (s *scaledShares) of(sh *Shares, replicas, perReplica int) *Shares {
	if sh == nil || replicas <= 1 {
		return sh
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[*Shares]*Shares{}
	}
	if v, ok := s.m[sh]; ok {
		return v
	}
	if len(s.m) > 64 { // reloads: keep the map small
		clear(s.m)
	}
	v := sh.Scaled(replicas, perReplica)
	s.m[sh] = v
	return v
}

// memberOf is a new call's member: the replica and a counter.
func (r *Redis) memberOf() string {
	return r.replica + ":" + strconv.FormatUint(r.nextID.Add(1), 36)
}

// shareUsageScript counts, for each caller (four keys each: released, in
// flight, reserved released, reserved in flight), its slots and its
// reserved slots held now.
const shareUsageScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS, 4 do
  local function live(k) return redis.call('ZCOUNT', k, '(' .. now, '+inf') end
  table.insert(out, live(KEYS[i]) + live(KEYS[i + 1]))
  table.insert(out, live(KEYS[i + 2]) + live(KEYS[i + 3]))
end
return out
`

// ShareUsage returns, for a key whose quota has Shares, the slots each
// caller holds by class, all replicas together (this replica's local part
// while Redis is away): the callers with a share and those this replica
// has seen.
func (r *Redis) ShareUsage(key string) []PartyUsage {
	lim := r.limitOf(key)
	if lim.Shares == nil {
		return nil
	}
	if r.fallback.Load() {
		return r.local.ShareUsage(key)
	}
	names := r.callersOf(key)
	var keys []string
	for _, c := range names {
		keys = append(keys, r.callerKeys(key, c)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	vals, err := r.shareUsage.Run(ctx, r.client, keys).Int64Slice()
	if err != nil || len(vals) != 2*len(names) {
		return r.local.ShareUsage(key)
	}
	out := make([]PartyUsage, len(names))
	for i, c := range names {
		all, res := int(vals[2*i]), int(vals[2*i+1])
		out[i] = PartyUsage{Caller: c, Reserved: res, Shared: all - res}
	}
	return out
}

// callersOf lists the callers under key: those with a share and those
// seen here, sorted.
func (r *Redis) callersOf(key string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[key]
	if !ok {
		return nil
	}
	set := map[string]bool{}
	for _, c := range k.lim.Shares.Callers() {
		set[c] = true
	}
	for c := range k.callers {
		set[c] = true
	}
	return slices.Sorted(maps.Keys(set))
}
