package ratelimit

import "time"

// The parties of a window: each caller under Shares (or the one party
// without), its place in line, and what it holds, by class.

// position is where a new call would stand in line: behind the Ahead
// calls (an Ahead call: behind those only) and everyone waiting.
func (w *window) position(ahead bool) int {
	if ahead {
		return len(w.aheadQ)
	}
	return len(w.aheadQ) + w.waiting
}

// enqueue puts a call in line: an Ahead call behind the Ahead calls,
// another behind its own caller's calls. A caller that starts waiting
// takes the fair-queuing clock, so that time spent idle earns it nothing.
func (w *window) enqueue(p *party, ahead bool) *waiter {
	w.seq++
	wt := &waiter{ready: make(chan struct{}), ahead: ahead, p: p, seq: w.seq}
	if ahead {
		w.aheadQ = append(w.aheadQ, wt)
		return wt
	}
	if len(p.queue) == 0 && p.pass < w.vtime {
		p.pass = w.vtime
	}
	p.queue = append(p.queue, wt)
	w.waiting++
	return wt
}

// dequeue takes a waiter that gave up out of line.
func (w *window) dequeue(wt *waiter) {
	q := &wt.p.queue
	if wt.ahead {
		q = &w.aheadQ
	}
	for i, x := range *q {
		if x == wt {
			*q = append((*q)[:i], (*q)[i+1:]...)
			if !wt.ahead {
				w.waiting--
			}
			return
		}
	}
}

// Record notes a call admitted elsewhere (through Redis) as holding a
// slot under key, without asking the quota: the shadow that keeps a
// fallback from sending more than this replica's part.
func (l *Window) Record(key string, lim Quota, c Call, reserved bool) Ticket {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	w := l.get(key, lim, now)
	p := w.partyOf(c)
	l.nextID++
	w.inflight[l.nextID] = slot{p, reserved}
	p.held++
	if reserved {
		p.reserved++
		w.reserved++
	}
	return l.ticket(key, lim, l.nextID)
}

// PartyUsage is one caller's slots held under a key, by class.
type PartyUsage struct {
	Caller           string
	Reserved, Shared int
}

// ShareUsage returns, for a key whose quota has Shares, the slots each
// caller holds by class (reserved, shared); nil without Shares.
func (l *Window) ShareUsage(key string) []PartyUsage {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.keys[key]
	if !ok || w.lim.Shares == nil {
		return nil
	}
	w.expire(l.now())
	var out []PartyUsage
	for name, p := range w.parties {
		out = append(out, PartyUsage{Caller: name, Reserved: p.reserved, Shared: p.held - p.reserved})
	}
	return out
}

// partyOf is the party a call belongs to: the internal one for an Ahead
// call, its caller with Shares, the one party "" without.
func (w *window) partyOf(c Call) *party {
	if c.Ahead {
		return w.internal
	}
	name := ""
	if w.lim.Shares != nil {
		name = c.Caller
	} else if w.solo != nil {
		return w.solo
	}
	p, ok := w.parties[name]
	if !ok {
		p = &party{name: name, share: w.lim.Shares.Of(name), pass: w.vtime}
		w.parties[name] = p
	}
	if name == "" && w.lim.Shares == nil {
		w.solo = p
	}
	return p
}

// atMax reports whether p holds its share's Max.
func (p *party) atMax() bool { return p.share.Max > 0 && p.held >= p.share.Max }

// canReserve reports whether p has reserve to use and is not at its Max.
func (p *party) canReserve() bool { return p.reserved < p.share.Reserve && !p.atMax() }

// admitHead admits p's first waiting call, if the window allows.
func (l *Window) admitHead(w *window, p *party, now time.Time) bool {
	id, reserved, ok := l.take(w, p, now, false)
	if !ok {
		return false
	}
	wt := p.queue[0]
	p.queue = p.queue[1:]
	w.waiting--
	wt.id, wt.reserved, wt.admitted = id, reserved, true
	close(wt.ready)
	return true
}

// nextEvent is when the window next changes: a pause or hold ends, a
// held slot's hold ends, the smoothing bucket has a token. false when
// only a release can change it.
func (w *window) nextEvent(now time.Time) (time.Time, bool) {
	var at time.Time
	known := false
	consider := func(t time.Time) {
		if t.After(now) && (!known || t.Before(at)) {
			at, known = t, true
		}
	}
	consider(w.paused)
	consider(w.hold)
	w.expire(now)
	if end, ok := w.nthEnd(1); ok {
		consider(end)
	}
	if w.bucket != nil {
		if deficit := 1 - w.bucket.TokensAt(now); deficit > 0 {
			consider(now.Add(time.Duration(deficit / float64(w.bucket.Limit()) * float64(time.Second))))
		}
	}
	if !known && (w.paused.After(now) || w.hold.After(now)) {
		return now, true
	}
	return at, known
}
