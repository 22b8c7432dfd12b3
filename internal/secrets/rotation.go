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
