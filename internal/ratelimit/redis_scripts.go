package ratelimit

import "time"

// acquireScript is the sliding window of Window, kept in Redis for every
// replica and decided atomically on Redis's clock (TIME), so replicas'
// clocks do not matter. Two sorted sets per key: the calls in flight,
// scored by a provisional end (in case a replica dies mid-call), and the
// released calls, scored by when their hold ends. A call is admitted while
// the two together hold fewer than Requests; Burst below Requests adds a
// GCRA smoothing cell. A pause (after a vendor 429) is a key with an
// expiry.
//
// KEYS[1] released, KEYS[2] in flight, KEYS[3] pause, KEYS[4] smoothing
// ARGV[1] requests, ARGV[2] member, ARGV[3] provisional hold µs,
// ARGV[4] smoothing interval µs (0: none), ARGV[5] burst
// returns {admitted 0/1, wait µs (-1: unknown, every slot in flight),
// paused 0/1, remaining, 0 (shareScript's class: a shared slot)}
const acquireScript = pausedPrelude + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local requests = tonumber(ARGV[1])
local n = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if n >= requests then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then
    return {0, tonumber(first[2]) - now, 0, 0, 0}
  end
  return {0, -1, 0, 0, 0}
end
` + smoothingCell + `
local hold = tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], now + hold, ARGV[2])
local keep = math.ceil(hold / 1000) + 1000
redis.call('PEXPIRE', KEYS[2], keep)
if redis.call('PTTL', KEYS[1]) > 0 then redis.call('PEXPIRE', KEYS[1], keep) end
return {1, 0, 0, requests - n - 1, 0}
`

// pausedPrelude opens both acquire scripts: Redis's clock as now, and a
// paused quota (KEYS[3], after a vendor 429) refused with its time left.
const pausedPrelude = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pttl = redis.call('PTTL', KEYS[3])
if pttl > 0 then
  return {0, pttl * 1000, 1, 0, 0}
end
`

// smoothingCell is the GCRA cell both acquire scripts run before they
// admit a shared call: with ARGV[4] an interval (µs; 0: no smoothing) and
// ARGV[5] the burst, it refuses a call that comes too soon (wait µs in the
// reply's second value) and otherwise moves the cell in KEYS[4] on.
const smoothingCell = `
local interval = tonumber(ARGV[4])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[4]) or '0')
  if tat < now then tat = now end
  local earliest = tat - (tonumber(ARGV[5]) - 1) * interval
  if earliest > now then
    return {0, earliest - now, 0, 0, 0}
  end
  redis.call('SET', KEYS[4], string.format('%.0f', tat + interval), 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
end
`

// releaseScript ends a call's flight: sent, it holds its slot until
// ARGV[2] µs from now (Per plus the margin); not sent, the slot is free.
// KEYS[1] released, KEYS[2] in flight; ARGV[1] member, ARGV[2] hold µs,
// ARGV[3] sent (1/0)
const releaseScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local was = redis.call('ZREM', KEYS[2], ARGV[1])
if was == 1 and ARGV[3] == '1' then
  local hold = tonumber(ARGV[2])
  redis.call('ZADD', KEYS[1], now + hold, ARGV[1])
  local pttl = redis.call('PTTL', KEYS[1])
  local want = math.ceil(hold / 1000) + 1000
  if pttl < want then redis.call('PEXPIRE', KEYS[1], want) end
end
return was
`

// usageScript counts the slots held under a key.
const usageScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') + redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
`

// pauseScript extends a pause to ARGV[1] ms from now, never shortens it.
const pauseScript = `
local pttl = redis.call('PTTL', KEYS[1])
local want = tonumber(ARGV[1])
if pttl < want then redis.call('SET', KEYS[1], '1', 'PX', want) end
return 1
`

// handoffSlack is how late a call sent by another replica may still reach
// the vendor: the hand-offs between Redis and the local fallback, which
// cannot see other replicas' calls, wait it out beyond the window.
const handoffSlack = time.Second
