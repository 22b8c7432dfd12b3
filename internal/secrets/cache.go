package secrets

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
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

// Proof is what the vendor said of a credential.
type Proof int

// Proofs.
const (
	// Unprovable: the upstream has no probe.
	Unprovable Proof = iota
	// Accepted: the vendor took it.
	Accepted
	// Refused: the vendor refused it (401, 403).
	Refused
	// Unknown: the probe failed otherwise (vendor down, timeout, 5xx).
	Unknown
	// Busy: no quota slot was free for the probe now; try again later.
	Busy
)

// Verdict is what a probe saw: the vendor's status (0: no answer) and a
// line for events and logs. Never a value.
type Verdict struct {
	Status int
	Detail string
}

// Credential lifecycle event types (Event.Type).
const (
	EventLoaded        = "loaded"
	EventRotated       = "rotated"
	EventRefreshFailed = "refresh_failed"
	EventServingStale  = "serving_stale"
	EventRecovered     = "recovered"
	EventExpiring      = "expiring"
	EventExpired       = "expired"
	EventRejected      = "rejected"
	EventUnproven      = "unproven"
)

// AuditName is the event's name in the audit trail: credential_<type>.
// (The Vault client's own events, vault_*, are named by their type.)
func (e Event) AuditName() string { return "credential_" + e.Type }

// Event is a credential lifecycle event, for the audit stream and metrics.
// It carries versions and error text, never a value.
type Event struct {
	Type       string // one of the Event* constants, or vault_login, vault_renewed, vault_login_failed
	Upstream   string
	Source     string
	Ref        string
	Version    int
	OldVersion int
	Error      string
	// Expiry is set on expiring and expired.
	Expiry Expiry
	// Validated is set on rotated when the upstream has a probe: whether
	// the vendor accepted the new version before it was served.
	Validated *bool
	// Status is the vendor's answer to the probe, on rejected and
	// unproven (0: none).
	Status int
}

// Status is a credential's state, for /readyz and metrics.
type Status struct {
	Name     string
	Source   string
	Ref      string
	Loaded   bool
	Version  int
	ReadAt   time.Time
	Stale    bool   // the last refresh failed; the last good copy is served
	Expired  bool   // stale for longer than MaxStale: calls get 503
	LastErr  string // the last refresh error, if the last refresh failed
	Reads    int64  // source reads attempted
	Failures int64  // source reads failed
	// Expiry is the credential in use's expiry (zero At: unknown);
	// Expiring and CredentialExpired say where it stands against now.
	Expiry            Expiry
	Expiring          bool
	CredentialExpired bool
	// MaxStale is how long the last good copy may be served.
	MaxStale time.Duration
	// Probe is the last proof of a rotated version; Rejected is set while
	// a newer version the vendor refused waits (the one in use serves).
	Probe    ProbeState
	Rejected bool
}

// ProbeState is the last probe of a credential's version.
type ProbeState struct {
	At      time.Time
	Version int
	Result  string // accepted, refused, unknown, busy
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
	// expiringAt is when the last expiring event was sent; expiredVersion
	// the version an expired event was sent for.
	expiringAt     time.Time
	expiredVersion int
	// Proving a rotated version: rejected is the version the vendor refused
	// (0: none), retryAt when to prove it again, backoff the wait after
	// that; oldRefused is set when the vendor refused the version in use
	// (a 401 on a call): the next version is then taken unproved. probe is
	// the last proof.
	rejected   *Credential
	retryAt    time.Time
	backoff    time.Duration
	oldRefused bool
	probe      ProbeState

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

// Reread reads an upstream's credential again at once, after the vendor
// refused it, and returns the newest copy. Reads forced this way happen at
// most once per MinReread per credential; in between it returns the cached
// copy.
func (c *Cache) Reread(ctx context.Context, name string) (Credential, error) {
	e, ok := c.entries[name]
	if !ok {
		return Credential{}, fmt.Errorf("%s: %w", name, ErrUnknown)
	}
	e.mu.Lock()
	// The vendor refused the version in use: a newer one is taken at once.
	e.oldRefused = true
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
	// A vendor refusal of the version in use counts for this read only.
	e.mu.Lock()
	oldRefused := e.oldRefused
	e.oldRefused = false
	e.mu.Unlock()
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
		if !c.proveRotation(ctx, e, old, cred, oldRefused) {
			cred = kept(old, cred.ReadAt)
		}
	case r.Version == 0:
		cred.Version = old.Version
	case r.Version != old.Version:
		if !c.proveRotation(ctx, e, old, cred, oldRefused) {
			cred = kept(old, cred.ReadAt)
		}
	}
	e.mu.Lock()
	wasStale := e.staleSent
	e.staleSent = false
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

// proveFirst proves the first version read (at start, or after a reload
// that changed sources) where the source keeps history: if the vendor
// refuses the newest version and accepts the one before it, that one
// serves (as it did before the restart), the newest is held back as on a
// rotation, and the note says so. Without history (a file, env, KV v1, a
// first version) the value read is all there is: it serves unproved.
func (c *Cache) proveFirst(ctx context.Context, e *entry, cred *Credential) (*Credential, string) {
	vs, ok := e.spec.Source.(versioned)
	if c.opts.Prove == nil || !ok || cred.Version < 2 {
		return cred, ""
	}
	now := c.opts.Now()
	p, detail := c.opts.Prove(ctx, e.spec.Name, *cred)
	if p == Unprovable {
		return cred, ""
	}
	c.record(e, cred.Version, p, now)
	if p != Refused {
		return cred, ""
	}
	c.probeEvent(EventRejected, e, cred, detail)
	r, err := vs.ReadVersion(ctx, cred.Version-1)
	if err == nil {
		err = checkFields(e.spec.Source.Kind(), e.spec.Source.Ref(), r.Fields, e.spec.Required)
	}
	if err != nil {
		c.opts.Log.Error("the vendor refused the newest credential version and the one before it cannot be read; serving the newest",
			zap.String("upstream", e.spec.Name), zap.Int("version", cred.Version), zap.Error(err))
		return cred, ""
	}
	prev := c.credential(e, r)
	if prev.Version == 0 {
		prev.Version = cred.Version - 1
	}
	pp, pdetail := c.opts.Prove(ctx, e.spec.Name, *prev)
	switch pp {
	case Accepted:
		c.settle(e, cred, proveBackoff)
		note := fmt.Sprintf("version %d refused by the vendor; serving version %d, which it accepts", cred.Version, prev.Version)
		c.opts.Log.Error("the vendor refused the newest credential version; serving the one before it",
			zap.String("upstream", e.spec.Name), zap.Int("version", prev.Version), zap.Int("refused", cred.Version),
			zap.String("probe", detail.Detail), zap.Duration("next_probe_in", proveBackoff))
		return prev, note
	case Refused:
		c.probeEvent(EventRejected, e, prev, pdetail)
	}
	c.opts.Log.Error("the vendor refused the newest credential version, and the one before it did not prove better; serving the newest",
		zap.String("upstream", e.spec.Name), zap.Int("version", cred.Version), zap.String("probe", detail.Detail))
	return cred, ""
}

// Probe back-off: a version the vendor refused is proved again after
// this, doubling up to the most, while it stays the same.
const (
	proveBackoff    = time.Minute
	proveBackoffMax = 30 * time.Minute
)

// proveRotation decides whether a new version replaces the one in use. The
// vendor is the judge, through the upstream's probe (Options.Prove):
//   - accepted: switch (rotated, validated);
//   - refused while the version in use still works: keep serving the old
//     one, report the new one rejected, prove it again after a back-off
//     (or as soon as it changes);
//   - refused, and the version in use refused too (a regenerate revoked
//     it): switch, and report both;
//   - no proof (vendor down, timeout): switch, unproven;
//   - no quota slot free for the probe: keep the old one, the new one
//     waits for the next refresh (never switch unproven for that).
//
// A vendor that refused the version in use on a call (Reread) settles it:
// switch at once.
func (c *Cache) proveRotation(ctx context.Context, e *entry, old, cred *Credential, oldRefused bool) bool {
	no, yes := false, true
	if c.opts.Prove == nil {
		return c.switchTo(e, old, cred, nil)
	}
	if oldRefused {
		return c.switchTo(e, old, cred, &no)
	}
	now := c.opts.Now()
	e.mu.Lock()
	heldBack := e.rejected != nil && sameCredential(e.rejected, cred)
	retryAt, backoff := e.retryAt, e.backoff
	e.mu.Unlock()
	if heldBack && now.Before(retryAt) {
		return false // refused before; not yet time to ask again
	}
	p, v := c.opts.Prove(ctx, e.spec.Name, *cred)
	if p == Unprovable {
		return c.switchTo(e, old, cred, nil)
	}
	c.record(e, cred.Version, p, now)
	switch p {
	case Accepted:
		return c.switchTo(e, old, cred, &yes)
	case Busy:
		c.opts.Log.Info("rotated credential not proved yet: no quota slot free; the version in use keeps serving",
			zap.String("upstream", e.spec.Name), zap.Int("version", cred.Version))
		return false
	case Unknown:
		c.probeEvent(EventUnproven, e, cred, v)
		c.opts.Log.Warn("rotated credential could not be proved; switched to it", zap.String("upstream", e.spec.Name),
			zap.Int("version", cred.Version), zap.String("probe", v.Detail))
		return c.switchTo(e, old, cred, &no)
	}
	// Refused: does the version in use still work?
	c.probeEvent(EventRejected, e, cred, v)
	if po, ov := c.opts.Prove(ctx, e.spec.Name, *old); po == Refused {
		c.probeEvent(EventRejected, e, old, ov)
		c.opts.Log.Error("the vendor refused both the rotated credential and the one in use; switched to the rotated one",
			zap.String("upstream", e.spec.Name), zap.Int("version", cred.Version), zap.Int("old_version", old.Version))
		return c.switchTo(e, old, cred, &no)
	}
	if heldBack {
		backoff = min(2*backoff, proveBackoffMax)
	} else {
		backoff = proveBackoff
	}
	c.settle(e, cred, backoff)
	c.opts.Log.Error("the vendor refused the rotated credential; the version in use keeps serving",
		zap.String("upstream", e.spec.Name), zap.Int("version", cred.Version), zap.Int("in_use", old.Version),
		zap.String("probe", v.Detail), zap.Duration("next_probe_in", backoff))
	return false
}

// switchTo reports the rotation to cred and clears any held-back version;
// it returns true (switch).
func (c *Cache) switchTo(e *entry, old, cred *Credential, validated *bool) bool {
	c.rotated(e, old, cred, validated)
	c.settle(e, nil, 0)
	return true
}

// probeEvent reports what the vendor said of a version (rejected,
// unproven).
func (c *Cache) probeEvent(typ string, e *entry, cred *Credential, v Verdict) {
	c.event(Event{Type: typ, Upstream: e.spec.Name, Source: cred.Source, Ref: cred.Ref, Version: cred.Version, Error: v.Detail, Status: v.Status})
}

// sameCredential reports whether a and b are the same version with the
// same value.
func sameCredential(a, b *Credential) bool {
	return a.Version == b.Version && sameFields(a.Fields, b.Fields)
}

// settle records a rejected version (nil: none) and when to prove it again.
func (c *Cache) settle(e *entry, rejected *Credential, backoff time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rejected, e.backoff = rejected, backoff
	e.retryAt = c.opts.Now().Add(backoff)
}

// record keeps the last proof for Status.
func (c *Cache) record(e *entry, version int, p Proof, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.probe = ProbeState{At: at, Version: version, Result: [...]string{"none", "accepted", "refused", "unknown", "busy"}[p]}
}

func (c *Cache) rotated(e *entry, old, cred *Credential, validated *bool) {
	c.event(Event{Type: EventRotated, Upstream: e.spec.Name, Source: cred.Source, Ref: cred.Ref, Version: cred.Version, OldVersion: old.Version, Validated: validated})
	c.opts.Log.Info("credential rotated", zap.String("upstream", e.spec.Name),
		zap.String("ref", cred.Ref), zap.Int("old_version", old.Version), zap.Int("version", cred.Version))
}

func (c *Cache) failed(e *entry, old *Credential, err error) {
	src := e.spec.Source
	c.event(Event{Type: EventRefreshFailed, Upstream: e.spec.Name, Source: src.Kind(), Ref: src.Ref(), Error: err.Error()})
	c.opts.Log.Warn("credential read failed", zap.String("upstream", e.spec.Name),
		zap.String("source", src.Kind()), zap.String("ref", src.Ref()), zap.Error(err))
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

// Ready reports whether every credential is loaded and usable, and if not,
// which are not and why.
func (c *Cache) Ready() (bool, []Status) {
	st := c.Status()
	ok := true
	for _, s := range st {
		if !s.Loaded || s.Expired {
			ok = false
		}
	}
	return ok, st
}

// Status returns every credential's state, sorted by name.
func (c *Cache) Status() []Status {
	now := c.opts.Now()
	out := make([]Status, 0, len(c.entries))
	for name, e := range c.entries {
		s := Status{Name: name, Source: e.spec.Source.Kind(), Ref: e.spec.Source.Ref(),
			Reads: e.reads.Load(), Failures: e.failures.Load(), MaxStale: c.opts.MaxStale}
		e.mu.Lock()
		if e.lastErr != nil {
			s.LastErr = e.lastErr.Error()
		}
		s.Stale = e.staleSent
		s.Probe, s.Rejected = e.probe, e.rejected != nil
		e.mu.Unlock()
		if cur := e.cur.Load(); cur != nil {
			s.Loaded, s.Version, s.ReadAt = true, cur.Version, cur.ReadAt
			s.Expired = now.Sub(cur.ReadAt) > c.opts.MaxStale
			s.Expiry = cur.Expiry
			s.CredentialExpired, s.Expiring = c.expiryState(cur.Expiry, now)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// expiryState says whether an expiry has passed, or is within
// ExpiryWarning of now.
func (c *Cache) expiryState(x Expiry, now time.Time) (expired, expiring bool) {
	if x.At.IsZero() {
		return false, false
	}
	if !now.Before(x.At) {
		return true, false
	}
	return false, x.At.Sub(now) <= c.opts.ExpiryWarning
}

// checkExpiry reports a credential in use that has expired (once per
// version) or expires within ExpiryWarning (at most once a day), as an
// event and a log line.
func (c *Cache) checkExpiry(e *entry) {
	cur := e.cur.Load()
	if cur == nil {
		return
	}
	now := c.opts.Now()
	expired, expiring := c.expiryState(cur.Expiry, now)
	e.mu.Lock()
	sendExpired := expired && e.expiredVersion != cur.Version
	sendExpiring := expiring && now.Sub(e.expiringAt) >= 24*time.Hour
	if sendExpired {
		e.expiredVersion = cur.Version
	}
	if sendExpiring {
		e.expiringAt = now
	}
	e.mu.Unlock()
	ev := Event{Upstream: e.spec.Name, Source: cur.Source, Ref: cur.Ref, Version: cur.Version, Expiry: cur.Expiry}
	switch {
	case sendExpired:
		ev.Type = EventExpired
		c.event(ev)
		c.opts.Log.Error("credential expired: put a new one in its source", zap.String("upstream", e.spec.Name),
			zap.Int("version", cur.Version), zap.Time("expires_at", cur.Expiry.At), zap.String("expiry_from", cur.Expiry.From))
	case sendExpiring:
		ev.Type = EventExpiring
		c.event(ev)
		c.opts.Log.Warn("credential expires soon: rotate it", zap.String("upstream", e.spec.Name),
			zap.Int("version", cur.Version), zap.Time("expires_at", cur.Expiry.At), zap.String("expiry_from", cur.Expiry.From))
	}
}

func sameFields(a, b map[string]Secret) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
