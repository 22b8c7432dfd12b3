package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/secrets"
)

// checkpointer writes signed checkpoints into the audit trail: every
// checkpoint_interval, after checkpoint_records records, and at shutdown.
// Each is also written to the operational log, so that a copy lives
// outside the audit file's storage. The key is the seed of
// audit.signing.credential (from the credential cache, so a rotation is
// picked up by the next checkpoint), or a Vault transit key that never
// leaves Vault. A checkpoint is taken under the writer's lock, signed
// outside it (a Vault round trip holds no call), then appended; a failed
// signature is retried with back-off, from a second up to the interval,
// while calls go on.
type checkpointer struct {
	a   *app
	cfg config.Signing

	mu      sync.Mutex
	signer  *audit.Signer
	version int
	ref     string
	// keyID, keyVersion: the last checkpoint's key; lastErr the last
	// failure to sign ("" after a success).
	keyID      string
	keyVersion int
	lastErr    string
}

func (c *checkpointer) run(ctx context.Context) error {
	interval := c.cfg.CheckpointInterval.D()
	every := time.NewTimer(interval)
	defer every.Stop()
	count := time.NewTicker(time.Second)
	defer count.Stop()
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-every.C:
		case <-count.C:
			if c.a.auditor.SinceCheckpoint() < uint64(c.cfg.CheckpointRecords) {
				continue
			}
		}
		if err := c.write(ctx); err != nil {
			every.Reset(backoff)
			backoff = min(2*backoff, interval)
			continue
		}
		backoff = time.Second
		every.Reset(interval)
	}
}

// write signs and writes a checkpoint covering every record so far.
func (c *checkpointer) write(ctx context.Context) error {
	s, err := c.keySigner(ctx)
	if err == nil {
		cp, ok := c.a.auditor.NextCheckpoint()
		if !ok {
			return nil
		}
		if err = audit.SignCheckpoint(ctx, s, &cp); err == nil {
			if _, err = c.a.auditor.AppendCheckpoint(cp, time.Now()); err != nil {
				c.a.log.Error("audit checkpoint not written", zap.Error(err))
				return err
			}
			c.mu.Lock()
			c.keyID, c.keyVersion, c.lastErr = cp.KeyID, cp.KeyVersion, ""
			c.mu.Unlock()
			// The auditor's external copy: the checkpoint object (about 400
			// bytes), which audit verify --checkpoint reads; not the whole
			// audit line beside it.
			c.a.log.Info("audit checkpoint", zap.Any("checkpoint", cp))
			return nil
		}
	}
	c.mu.Lock()
	c.lastErr = err.Error()
	c.mu.Unlock()
	c.a.log.Error("audit checkpoint not signed: retrying; calls go on", zap.Error(err))
	return err
}

// keySigner is what signs: the transit key, or the seed the cache holds.
func (c *checkpointer) keySigner(ctx context.Context) (audit.KeySigner, error) {
	if t := c.transit(); t != nil {
		return t, nil
	}
	if c.cfg.VaultTransit != nil {
		return nil, errors.New("no Vault client for audit.signing.vault_transit")
	}
	return c.currentSigner(ctx)
}

// transit is the transit key, through the Vault client in use (a reload
// may replace it); nil without vault_transit.
func (c *checkpointer) transit() *secrets.Transit {
	vt := c.cfg.VaultTransit
	if vt == nil {
		return nil
	}
	v := c.a.vault.Load().client()
	if v == nil {
		return nil
	}
	return v.Transit(vt.Mount, vt.Key)
}

// checkTransit reads the transit key once at start: one that is not a
// plain Ed25519 key is a start-up error; an exportable one a warning;
// Vault away only a warning (the checkpoints retry).
func (c *checkpointer) checkTransit(ctx context.Context) error {
	t := c.transit()
	if t == nil {
		return nil
	}
	k, err := t.Read(ctx)
	switch {
	case errors.Is(err, secrets.ErrTransitKeyType):
		return fmt.Errorf("audit.signing.vault_transit: %w", err)
	case err != nil:
		c.a.log.Warn("audit signing key not read yet: checkpoints retry until Vault answers", zap.Error(err))
	case k.Exportable:
		c.a.log.Warn("the audit transit key is exportable: whoever may export it can sign a rewritten trail; make a key with exportable=false",
			zap.String("key", t.Ref()))
	}
	return nil
}

// currentSigner is the signer for the key the cache holds now.
func (c *checkpointer) currentSigner(ctx context.Context) (*audit.Signer, error) {
	cred, err := c.a.creds.Get(ctx, assemble.AuditSigningCredential)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.signer != nil && cred.Version == c.version && cred.Ref == c.ref {
		return c.signer, nil
	}
	seed, err := cred.Field("private_key")
	if err != nil {
		return nil, err
	}
	s, err := audit.NewSigner(seed.Reveal())
	if err != nil {
		return nil, err
	}
	c.signer, c.version, c.ref = s, cred.Version, cred.Ref
	return s, nil
}

// signingStatus is the one account of the checkpoint signing key, given in
// /readyz, /credentials (keybroker credentials) and the metrics, apart
// from the upstreams' credentials: where the key lives, its id and
// version, and how old the oldest record no checkpoint covers yet is.
type signingStatus struct {
	Source  string `json:"source"`
	Ref     string `json:"ref"`
	Loaded  bool   `json:"loaded"`
	Version int    `json:"version,omitempty"`
	// KeyID is the id of the key the last checkpoint was signed with (its
	// public key's hash, as verify names it); "" before the first.
	KeyID string `json:"key_id,omitempty"`
	// OldestUnsignedS is the age, in seconds, of the oldest record that
	// no checkpoint covers yet; 0 when every record is covered.
	OldestUnsignedS int64  `json:"oldest_unsigned_s"`
	Error           string `json:"error,omitempty"`
}

// status builds the signing status; nil when audit.signing is not set.
func (c *checkpointer) status(now time.Time) *signingStatus {
	if c == nil {
		return nil
	}
	return c.statusFrom(now, c.a.creds.current().Status())
}

// statusFrom builds the signing status from the credentials' statuses
// read at now.
func (c *checkpointer) statusFrom(now time.Time, creds []secrets.Status) *signingStatus {
	if c == nil {
		return nil
	}
	st := &signingStatus{}
	if t := c.transit(); t != nil || c.cfg.VaultTransit != nil {
		st.Source, st.Ref, st.Loaded = "vault_transit", c.cfg.VaultTransit.Mount+"/"+c.cfg.VaultTransit.Key, true
	} else {
		for _, s := range creds {
			if s.Name == assemble.AuditSigningCredential {
				st.Source, st.Ref, st.Loaded, st.Version, st.Error = s.Source, s.Ref, s.Loaded, s.Version, s.LastErr
			}
		}
	}
	c.mu.Lock()
	if c.keyID != "" {
		st.KeyID = c.keyID
	} else if c.signer != nil {
		st.KeyID = c.signer.KeyID()
	}
	if c.cfg.VaultTransit != nil {
		st.Version = c.keyVersion
	}
	if c.lastErr != "" {
		st.Error = c.lastErr
	}
	c.mu.Unlock()
	if at, ok := c.a.auditor.OldestUnsigned(); ok {
		st.OldestUnsignedS = int64(now.Sub(at).Seconds())
	}
	return st
}

// upstreamCredential says whether a credential status is an upstream's
// (or the egress proxy's, or the token signing key's), not the audit
// signing key, which has its own line.
func upstreamCredential(name string) bool { return name != assemble.AuditSigningCredential }

// line is the signing status in one line, for keybroker credentials.
func (s *signingStatus) line() string {
	st := "ok"
	switch {
	case !s.Loaded:
		st = "NOT LOADED: checkpoints are not written"
	case s.Error != "":
		st = "its source fails: " + s.Error
	}
	key := s.KeyID
	if key == "" {
		key = "(no checkpoint yet)"
	}
	unsigned := "every record signed"
	if s.OldestUnsignedS > 0 {
		unsigned = fmt.Sprintf("oldest unsigned record %ds old", s.OldestUnsignedS)
	}
	return fmt.Sprintf("audit signing: %s %s, version %d, key id %s; %s; %s", s.Source, s.Ref, s.Version, key, unsigned, st)
}
