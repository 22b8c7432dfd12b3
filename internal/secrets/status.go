package secrets

import (
	"sort"
	"time"

	"go.uber.org/zap"
)

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
