package secrets

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

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

// A rotated version is proved before it is served (Options.Prove): the
// vendor judges it with the upstream's probe, and one it refuses while the
// version in use works is held back and proved again with back-off.

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
// A read a vendor 401 forced (Refused) proves a new version the same way:
// a 401 never promotes a version the vendor refuses.
func (c *Cache) proveRotation(ctx context.Context, e *entry, old, cred *Credential) bool {
	no, yes := false, true
	if c.opts.Prove == nil {
		return c.switchTo(e, old, cred, nil)
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

// reverted is told that the source holds the version in use again (a
// broken value written to a file and then put back): a rotation held back
// is gone from the source, so its rejection and back-off are cleared.
func (c *Cache) reverted(e *entry, cred *Credential) {
	e.mu.Lock()
	rejected := e.rejected
	e.mu.Unlock()
	if rejected == nil {
		return
	}
	c.settle(e, nil, 0)
	c.opts.Log.Info("the source holds the version in use again; the rejected rotation is gone",
		zap.String("upstream", e.spec.Name), zap.Int("version", cred.Version), zap.Int("rejected", rejected.Version))
}

// InUseProbeEvery bounds the proofs of the version in use that vendor 401s
// cause while a rotation is held back: one per upstream per this, the
// verdict reused in between (Huntress allows 60 calls a minute).
const InUseProbeEvery = time.Minute

// inUseProof is the last proof of the version in use after a 401.
type inUseProof struct {
	at      time.Time
	version int
	proof   Proof
	verdict Verdict
}

// Refused is told that the vendor refused version used of name's
// credential on a call, and returns the credential to use now:
//   - a refusal of a version no longer in use changes nothing;
//   - otherwise the source is read again at once (at most once per
//     MinReread), and a new version is proved as on any rotation: a 401
//     never promotes a version the vendor refuses;
//   - while a rotation is held back (the vendor refused it), the version
//     in use is proved, once per InUseProbeEvery at most, one proof at a
//     time: only if the vendor now refuses it too does the held-back
//     version serve (credential_rotated, validated false, with the
//     reason). Otherwise the 401 was about that call, and nothing changes.
//
// An upstream without a probe behaves as on any re-read.
func (c *Cache) Refused(ctx context.Context, name string, used int) (Credential, error) {
	e, ok := c.entries[name]
	if !ok {
		return Credential{}, fmt.Errorf("%s: %w", name, ErrUnknown)
	}
	if cur := e.cur.Load(); cur == nil || cur.Version != used {
		return c.Get(ctx, name) // about a version no longer in use
	}
	cred, err := c.Reread(ctx, name)
	if err != nil || cred.Version != used || c.opts.Prove == nil {
		return cred, err
	}
	cur := e.cur.Load()
	e.mu.Lock()
	held := e.rejected
	e.mu.Unlock()
	if held == nil || cur == nil || cur.Version != used {
		return cred, nil
	}
	p, v, ok := c.proveInUse(ctx, e, cur)
	if !ok || p != Refused {
		return cred, nil
	}
	next := kept(held, c.opts.Now())
	e.mu.Lock()
	still := e.rejected == held
	e.mu.Unlock()
	if !still || !e.cur.CompareAndSwap(cur, next) {
		return c.Get(ctx, name) // a read meanwhile decided otherwise
	}
	no := false
	c.event(Event{Type: EventRotated, Upstream: e.spec.Name, Source: next.Source, Ref: next.Ref, Version: next.Version,
		OldVersion: cur.Version, Validated: &no,
		Error: fmt.Sprintf("the vendor refused the version in use too (%s); the held-back version serves unproved", v.Detail)})
	c.opts.Log.Error("the vendor refused both the version in use and the held-back rotation; switched to the rotated one",
		zap.String("upstream", e.spec.Name), zap.Int("version", next.Version), zap.Int("old_version", cur.Version), zap.String("probe", v.Detail))
	c.settle(e, nil, 0)
	return *next, nil
}

// proveInUse proves the version in use after a vendor 401, at most once
// per InUseProbeEvery (the verdict is reused in between) and one proof at
// a time; ok is false when none is known (one is running).
func (c *Cache) proveInUse(ctx context.Context, e *entry, cur *Credential) (Proof, Verdict, bool) {
	now := c.opts.Now()
	e.mu.Lock()
	last := e.inUse
	if last.version == cur.Version && !last.at.IsZero() && now.Sub(last.at) < InUseProbeEvery {
		e.mu.Unlock()
		return last.proof, last.verdict, true
	}
	if e.inUseBusy {
		e.mu.Unlock()
		return 0, Verdict{}, false
	}
	e.inUseBusy = true
	e.mu.Unlock()
	p, v := c.opts.Prove(ctx, e.spec.Name, *cur)
	e.mu.Lock()
	e.inUseBusy = false
	if p != Busy && p != Unprovable {
		e.inUse = inUseProof{at: now, version: cur.Version, proof: p, verdict: v}
	}
	e.mu.Unlock()
	c.record(e, cur.Version, p, now)
	if p == Refused {
		c.probeEvent(EventRejected, e, cur, v)
	}
	return p, v, p != Busy && p != Unprovable
}
