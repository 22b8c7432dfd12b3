// Package procs fits Go's scheduler to how calls arrive. While keybroker
// serves one call at a time it runs on one processor (GOMAXPROCS 1); the
// moment a second call overlaps it goes back to the runtime's default. It
// owns a count of calls in flight and nothing else of the request path.
//
// Why: a call through keybroker hands off between goroutines six or more
// times (the caller's connection, its background reader, the vendor
// connection's read loop). With a second processor idle, each hand-off
// wakes an operating-system thread that mostly finds nothing to do: at
// one call at a time that thread juggling is close to half the process's
// CPU. On one processor a hand-off stays on the thread. With calls
// overlapping, the other processors do real work, and they are all used.
package procs

import (
	"context"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQuiet is how long calls must have come one at a time before the
// governor goes down to one processor.
const DefaultQuiet = time.Second

// ticks is how many times per Quiet the governor looks at the calls.
const ticks = 4

// Governor counts the calls in flight and sets the processors. The zero
// value is not usable; use New.
type Governor struct {
	// Quiet is how long calls must have come one at a time (none
	// overlapping) before the governor goes down to one processor.
	Quiet time.Duration
	// Lower goes down to one processor; Restore goes back to the
	// runtime's default (which follows the CPU limit, as at start).
	// Defaults: runtime.GOMAXPROCS(1) and runtime.SetDefaultGOMAXPROCS.
	Lower, Restore func()
	// Changed, when set, is told each change: true for one processor.
	Changed func(one bool)

	inflight atomic.Int32
	overlap  atomic.Bool // calls overlapped since the last tick
	// mark is set while the process is on one processor or going there:
	// a call that overlaps another and finds it brings every processor
	// back. down is set once GOMAXPROCS is 1.
	mark, down atomic.Bool
	quiet      int        // ticks in a row without an overlap (Run's goroutine)
	mu         sync.Mutex // one change at a time
}

// New returns a Governor, or nil when there is nothing to govern: the
// runtime's default is one processor already.
func New() *Governor {
	if runtime.GOMAXPROCS(0) < 2 {
		return nil
	}
	return &Governor{
		Quiet:   DefaultQuiet,
		Lower:   func() { runtime.GOMAXPROCS(1) },
		Restore: runtime.SetDefaultGOMAXPROCS,
	}
}

// Wrap counts the calls h serves. A call that finds another in flight
// brings back every processor before it goes on.
func (g *Governor) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.inflight.Add(1) > 1 {
			if !g.overlap.Load() {
				g.overlap.Store(true)
			}
			if g.mark.Load() {
				g.set(false)
			}
		}
		defer g.inflight.Add(-1)
		h.ServeHTTP(w, r)
	})
}

// Run looks at the calls ticks times per Quiet until ctx ends, and then
// gives the runtime back its default.
func (g *Governor) Run(ctx context.Context) {
	t := time.NewTicker(g.Quiet / ticks)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			g.set(false)
			return
		case <-t.C:
			g.Tick()
		}
	}
}

// Tick is one look: after a whole Quiet without two calls in flight at
// once, down to one processor. Run calls it; tests call it directly.
func (g *Governor) Tick() {
	if g.overlap.Swap(false) || g.inflight.Load() > 1 {
		g.quiet = 0
		return
	}
	if g.quiet++; g.quiet >= ticks && !g.mark.Load() {
		g.set(true)
	}
}

// OneProcessor reports whether the process now runs on one processor.
func (g *Governor) OneProcessor() bool { return g.down.Load() }

// set changes the processors, one change at a time. Going down, the mark
// is set before the check for calls in flight: a call that starts on
// either side of it is either seen here or sees the mark and restores.
func (g *Governor) set(one bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mark.Load() == one {
		return
	}
	g.mark.Store(one)
	if one && (g.inflight.Load() > 1 || g.overlap.Load()) {
		g.mark.Store(false)
		return
	}
	if one {
		g.Lower()
		g.down.Store(true)
	} else {
		g.down.Store(false)
		g.Restore()
	}
	if g.Changed != nil {
		g.Changed(one)
	}
}
