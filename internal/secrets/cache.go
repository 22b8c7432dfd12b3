package secrets

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Spec is one credential the cache keeps: the upstream it serves, its source
// and the fields the upstream's auth needs.
type Spec struct {
	Name     string
	Source   Source
	Required []string
	// Lifetime, when set, is how long the vendor's credential lives
	// (Infocyte: a year): a version without a stored expiry is taken to
	// expire Lifetime after it was written to Vault (an estimate).
	Lifetime time.Duration
}

// Options tunes a Cache. Zero values mean the documented default.
type Options struct {
	// RefreshInterval is how often each credential is re-read in the
	// background. Default 1m.
	RefreshInterval time.Duration
	// MaxStale is how long the last good copy is served while its source
	// fails. Default 1h.
	MaxStale time.Duration
	// MinReread is the least time between two reads of one credential forced
	// by a vendor 401 (Reread). Default 5s.
	MinReread time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log receives operational messages. Default: none.
	Log *zap.Logger
	// OnEvent, when set, receives lifecycle events (loaded, rotated,
	// refresh_failed, serving_stale, recovered, expiring, expired).
	OnEvent func(Event)
	// ExpiryWarning is how long before a credential's expiry it is
	// reported as expiring. Default 30 days.
	ExpiryWarning time.Duration
	// Prove, when set, asks the vendor whether a credential works (the
	// upstream's probe); nil for a credential nobody can prove is no proof
	// at all. A rotated version is proved before it is served (see
	// proveRotation).
	Prove func(ctx context.Context, name string, c Credential) (Proof, Verdict)
}

// Cache holds every upstream's credential in memory. Get never touches the
// source once a credential is loaded: reads happen in Run's background
// refresh, in a first load (coalesced), and in Reread after a vendor 401.
type Cache struct {
	opts    Options
	entries map[string]*entry
}

type entry struct {
	spec Spec

	cur atomic.Pointer[Credential]

	mu        sync.Mutex
	inflight  *load
	lastForce time.Time // last read forced by Reread (a vendor 401)
	lastErr   error
	staleSent bool
	// failSent is the failure last reported (event and warning); the same
	// failure again is only counted, until a read succeeds.
	failSent string
	// expiringAt is when the last expiring event was sent; expiredVersion
	// the version an expired event was sent for.
	expiringAt     time.Time
	expiredVersion int
	// Proving a rotated version: rejected is the version the vendor refused
	// (nil: none), retryAt when to prove it again, backoff the wait after
	// that. probe is the last proof.
	rejected *Credential
	retryAt  time.Time
	backoff  time.Duration
	probe    ProbeState
	// inUse is the last proof of the version in use after a vendor 401
	// while a rotation is held back (Refused); inUseBusy while one runs.
	inUse     inUseProof
	inUseBusy bool

	reads, failures atomic.Int64
}

type load struct {
	done chan struct{}
	cred *Credential
	err  error
}

// NewCache returns a cache for specs. It reads nothing and starts nothing;
// call Run.
func NewCache(specs []Spec, opts Options) (*Cache, error) {
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = time.Minute
	}
	if opts.MaxStale <= 0 {
		opts.MaxStale = time.Hour
	}
	if opts.MinReread <= 0 {
		opts.MinReread = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.ExpiryWarning <= 0 {
		opts.ExpiryWarning = 30 * 24 * time.Hour
	}
	c := &Cache{opts: opts, entries: map[string]*entry{}}
	for _, s := range specs {
		if s.Source == nil {
			return nil, fmt.Errorf("credential %s: no source", s.Name)
		}
		if _, dup := c.entries[s.Name]; dup {
			return nil, fmt.Errorf("credential %s: configured twice", s.Name)
		}
		c.entries[s.Name] = &entry{spec: s}
	}
	return c, nil
}

// Get returns the current credential for an upstream. A credential never
// loaded is loaded now (concurrent callers share one read); one whose source
// has failed for longer than MaxStale gives ErrUnavailable.
func (c *Cache) Get(ctx context.Context, name string) (Credential, error) {
	e, ok := c.entries[name]
	if !ok {
		return Credential{}, fmt.Errorf("%s: %w", name, ErrUnknown)
	}
	if cur := e.cur.Load(); cur != nil {
		if c.opts.Now().Sub(cur.ReadAt) > c.opts.MaxStale {
			return Credential{}, fmt.Errorf("%s %s: source failing for longer than max_stale: %w", cur.Source, cur.Ref, ErrUnavailable)
		}
		return *cur, nil
	}
	cred, err := c.load(ctx, e)
	if err != nil {
		return Credential{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return *cred, nil
}

// Reread reads an upstream's credential again at once and returns the
// newest copy; a new version is proved as on any rotation. Reads forced
// this way happen at most once per MinReread per credential; in between
// it returns the cached copy.
func (c *Cache) Reread(ctx context.Context, name string) (Credential, error) {
	e, ok := c.entries[name]
	if !ok {
		return Credential{}, fmt.Errorf("%s: %w", name, ErrUnknown)
	}
	e.mu.Lock()
	inflight := e.inflight
	recent := c.opts.Now().Sub(e.lastForce) < c.opts.MinReread
	if inflight == nil && !recent {
		e.lastForce = c.opts.Now()
	}
	e.mu.Unlock()
	switch {
	case inflight != nil:
		// Another 401 (or the refresh) is reading already: wait for that
		// read, so this call can retry with what it finds.
		select {
		case <-inflight.done:
		case <-ctx.Done():
			return Credential{}, ctx.Err()
		}
	case !recent:
		if _, err := c.load(ctx, e); err != nil {
			c.opts.Log.Warn("credential re-read after vendor 401 failed",
				zap.String("upstream", name), zap.Error(err))
		}
	}
	return c.Get(ctx, name)
}

// load reads e's source once, shared by every concurrent caller, and stores
// a valid result. A failure keeps the last good copy.
func (c *Cache) load(ctx context.Context, e *entry) (*Credential, error) {
	e.mu.Lock()
	if l := e.inflight; l != nil {
		e.mu.Unlock()
		select {
		case <-l.done:
			return l.cred, l.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l := &load{done: make(chan struct{})}
	e.inflight = l
	e.mu.Unlock()

	// The read is not tied to one caller's context: others may be waiting
	// on it. It is bounded instead.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	l.cred, l.err = c.read(rctx, e)
	cancel()

	e.mu.Lock()
	e.inflight = nil
	e.lastErr = l.err
	e.mu.Unlock()
	close(l.done)
	return l.cred, l.err
}

func (c *Cache) read(ctx context.Context, e *entry) (*Credential, error) {
	src := e.spec.Source
	e.reads.Add(1)
	r, err := src.Read(ctx)
	if err == nil {
		err = checkFields(src.Kind(), src.Ref(), r.Fields, e.spec.Required)
	}
	old := e.cur.Load()
	if err != nil {
		e.failures.Add(1)
		c.failed(e, old, err)
		return nil, err
	}

	cred := c.credential(e, r)
	switch {
	case old == nil:
		if cred.Version == 0 {
			cred.Version = 1
		}
		var note string
		cred, note = c.proveFirst(ctx, e, cred)
		c.event(Event{Type: EventLoaded, Upstream: e.spec.Name, Source: cred.Source, Ref: cred.Ref, Version: cred.Version, Error: note})
		c.opts.Log.Info("credential loaded", zap.String("upstream", e.spec.Name),
			zap.String("source", cred.Source), zap.String("ref", cred.Ref), zap.Int("version", cred.Version))
	case r.Version == 0 && !sameFields(old.Fields, r.Fields):
		cred.Version = old.Version + 1
		if !c.proveRotation(ctx, e, old, cred) {
			cred = kept(old, cred.ReadAt)
		}
	case r.Version == 0:
		cred.Version = old.Version
		c.reverted(e, cred)
	case r.Version != old.Version:
		if !c.proveRotation(ctx, e, old, cred) {
			cred = kept(old, cred.ReadAt)
		}
	case sameFields(old.Fields, cred.Fields):
		c.reverted(e, cred)
	}
	e.mu.Lock()
	wasStale := e.staleSent
	e.staleSent, e.failSent = false, ""
	e.mu.Unlock()
	if wasStale {
		c.event(Event{Type: EventRecovered, Upstream: e.spec.Name, Source: cred.Source, Ref: cred.Ref, Version: cred.Version})
		c.opts.Log.Info("credential source recovered", zap.String("upstream", e.spec.Name), zap.String("ref", cred.Ref))
	}
	e.cur.Store(cred)
	return cred, nil
}

// kept is the version in use, served on while a newer one waits for the
// vendor's proof: the source answered at readAt, so it is not stale.
func kept(old *Credential, readAt time.Time) *Credential {
	k := *old
	k.ReadAt = readAt
	return &k
}

// credential is a reading as the cache keeps it, its expiry estimated from
// the upstream's lifetime when none is stored.
func (c *Cache) credential(e *entry, r Reading) *Credential {
	src := e.spec.Source
	cred := &Credential{Fields: r.Fields, Version: r.Version, Source: src.Kind(), Ref: src.Ref(), ReadAt: c.opts.Now(), Expiry: r.Expiry}
	if cred.Expiry.At.IsZero() && e.spec.Lifetime > 0 && !r.Created.IsZero() {
		cred.Expiry = Expiry{At: r.Created.Add(e.spec.Lifetime), From: ExpiryLifetime}
	}
	return cred
}

// failed reports a failed read: the event and the warning once per
// failure, again when it changes (a placeholder left in a source would
// otherwise write one event per retry, thousands an hour); the metric of
// failures counts every one.
func (c *Cache) failed(e *entry, old *Credential, err error) {
	src := e.spec.Source
	e.mu.Lock()
	repeat := e.failSent == err.Error()
	e.failSent = err.Error()
	e.mu.Unlock()
	if !repeat {
		c.event(Event{Type: EventRefreshFailed, Upstream: e.spec.Name, Source: src.Kind(), Ref: src.Ref(), Error: err.Error()})
		c.opts.Log.Warn("credential read failed", zap.String("upstream", e.spec.Name),
			zap.String("source", src.Kind()), zap.String("ref", src.Ref()), zap.Error(err))
	}
	if old == nil {
		return
	}
	e.mu.Lock()
	first := !e.staleSent
	e.staleSent = true
	e.mu.Unlock()
	if first {
		c.event(Event{Type: EventServingStale, Upstream: e.spec.Name, Source: src.Kind(), Ref: src.Ref(), Version: old.Version, Error: err.Error()})
		c.opts.Log.Warn("serving the last good credential", zap.String("upstream", e.spec.Name),
			zap.Int("version", old.Version), zap.Duration("max_stale", c.opts.MaxStale))
	}
}

func (c *Cache) event(ev Event) {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(ev)
	}
}

// Run loads every credential, then refreshes each in the background every
// RefreshInterval (sources that are cheap to poll, more often) until ctx
// ends. A failed read is retried sooner, backing off up to the interval.
func (c *Cache) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, e := range c.entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.refreshLoop(ctx, e)
		}()
	}
	wg.Wait()
	return nil
}

func (c *Cache) refreshLoop(ctx context.Context, e *entry) {
	interval := c.opts.RefreshInterval
	if p, ok := e.spec.Source.(poller); ok && p.PollInterval() < interval {
		interval = p.PollInterval()
	}
	retry := time.Second
	for {
		_, _ = c.load(ctx, e)
		c.checkExpiry(e)
		e.mu.Lock()
		failed := e.lastErr != nil
		e.mu.Unlock()
		next := interval
		if failed {
			next, retry = min(retry, interval), min(2*retry, interval)
		} else {
			retry = time.Second
			// Spread refreshes of many credentials over ±10% of the interval.
			next += time.Duration((rand.Float64() - 0.5) * 0.2 * float64(interval))
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Refresh reads a credential's source now, as the background refresh
// does (a rotated version is proved first), and reports its expiry.
func (c *Cache) Refresh(ctx context.Context, name string) error {
	e, ok := c.entries[name]
	if !ok {
		return fmt.Errorf("%s: %w", name, ErrUnknown)
	}
	_, err := c.load(ctx, e)
	c.checkExpiry(e)
	return err
}
