// Package budget bounds what refusals write to the audit trail. A refusal
// costs whoever provokes it nothing, so an unbounded stream of them (a
// keyless flood from one address, a stolen low-privilege key asking for
// what it may not have) could fill the audit disk, after which every
// caller gets 503. A Budget gives each party (a source address, or a known
// caller) a rate of recorded refusals, and optionally a total over all
// parties; within them a refusal is recorded one by one, beyond them it is
// only counted, and Flush hands back the counts for one summary event per
// party. It owns the counting, not the events: the proxy writes them.
package budget

import (
	"context"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/keybroker/keybroker/internal/ratelimit"
)

// Bounds of what one flush interval counts: parties counted one by one
// (the rest together under Other), paths per party (the rest as Other),
// and paths named in a Summary.
const (
	MaxParties = 1000
	MaxPaths   = 1000
	TopPaths   = 5
)

// Other is the party, or path, that counts the rest once MaxParties (or
// MaxPaths) are counted.
const Other = "(other)"

// Limits are the rates of recorded refusals. A refusal over either is
// counted instead. Requests 0 in Total means no total.
type Limits struct {
	// Each is the limit per party.
	Each ratelimit.Quota
	// Total is the limit over all parties.
	Total ratelimit.Quota
}

// Refusal is what a refusal over the budget is counted as.
type Refusal struct {
	// Code is the refusal's contract code ("" counts no code).
	Code string
	// Path is the refused path ("" counts no path).
	Path string
}

// Summary is one party's refusals counted since the previous flush.
type Summary struct {
	Party string
	Count int64
	// Codes counts the refusals by code; Paths are the most refused
	// paths, most first (at most TopPaths); both nil when none was given.
	Codes map[string]int64
	Paths []PathCount
	// Since is when the first of them was counted.
	Since time.Time
}

// PathCount is one refused path and how often.
type PathCount struct {
	Path  string
	Count int64
}

// Budget charges refusals to parties. The zero value is not usable; use
// New. Its methods are safe for concurrent use.
type Budget struct {
	name string // keys this budget's buckets in gate
	gate *ratelimit.Local
	now  func() time.Time

	mu      sync.Mutex
	since   time.Time
	parties map[string]*count
}

type count struct {
	n     int64
	codes map[string]int64
	paths map[string]int64
}

// New returns a budget whose buckets are kept in gate under name (several
// budgets may share one gate). now is the clock (nil: time.Now).
func New(name string, gate *ratelimit.Local, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	return &Budget{name: name, gate: gate, now: now}
}

// Charge charges one refusal to party under lim. Within the limits it
// returns over false: the refusal gets its own record. Over them, the
// refusal is counted for the next Flush, and retry says when the party's
// budget has room again. It never waits.
func (b *Budget) Charge(ctx context.Context, party string, lim Limits, r Refusal) (retry time.Duration, over bool) {
	steps := [2]struct {
		key string
		lim ratelimit.Quota
	}{{b.name + ":" + party, lim.Each}, {b.name + ":*", lim.Total}}
	for _, s := range steps {
		if s.lim.Requests <= 0 {
			continue
		}
		// Over the budget is counted at once: a refusal never waits.
		_, err := b.gate.Wait(ctx, s.key, s.lim, ratelimit.Call{})
		if err == nil {
			continue
		}
		retry = time.Second
		if ref, ok := ratelimit.IsRefused(err); ok {
			retry = ref.RetryAfter
		}
		b.add(party, r)
		return retry, true
	}
	return 0, false
}

// Count counts one for party without charging any limit: for what is
// summarised whatever the rate (the token endpoint's issued tokens).
func (b *Budget) Count(party string, r Refusal) { b.add(party, r) }

func (b *Budget) add(party string, r Refusal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.parties == nil {
		b.parties, b.since = map[string]*count{}, b.now()
	}
	c := b.parties[party]
	if c == nil {
		if len(b.parties) >= MaxParties {
			party = Other
			c = b.parties[party]
		}
		if c == nil {
			c = &count{}
			b.parties[party] = c
		}
	}
	c.n++
	if r.Code != "" {
		if c.codes == nil {
			c.codes = map[string]int64{}
		}
		c.codes[r.Code]++
	}
	if r.Path != "" {
		if c.paths == nil {
			c.paths = map[string]int64{}
		}
		p := r.Path
		if _, ok := c.paths[p]; !ok && len(c.paths) >= MaxPaths {
			p = Other
		}
		c.paths[p]++
	}
}

// Flush returns what was counted since the previous flush, one Summary per
// party in name order, and starts counting anew.
func (b *Budget) Flush() []Summary {
	b.mu.Lock()
	parties, since := b.parties, b.since
	b.parties = nil
	b.mu.Unlock()
	out := make([]Summary, 0, len(parties))
	for _, name := range slices.Sorted(maps.Keys(parties)) {
		c := parties[name]
		out = append(out, Summary{Party: name, Count: c.n, Codes: c.codes, Paths: topPaths(c.paths), Since: since})
	}
	return out
}

// topPaths are the most counted paths, most first (then by path).
func topPaths(m map[string]int64) []PathCount {
	if len(m) == 0 {
		return nil
	}
	out := make([]PathCount, 0, len(m))
	for p, n := range m {
		out = append(out, PathCount{Path: p, Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Count > out[j].Count || (out[i].Count == out[j].Count && out[i].Path < out[j].Path)
	})
	return out[:min(len(out), TopPaths)]
}
