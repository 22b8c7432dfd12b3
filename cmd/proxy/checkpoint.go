package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/config"
)

// checkpointer writes signed checkpoints into the audit trail: every
// checkpoint_interval, after checkpoint_records records, and at shutdown.
// Each is also written to the operational log, so that a copy lives
// outside the audit file's storage. The key comes from the credential
// cache, so a rotation is picked up by the next checkpoint.
type checkpointer struct {
	a   *app
	cfg config.Signing

	mu      sync.Mutex
	signer  *audit.Signer
	version int
	ref     string
}

func (c *checkpointer) run(ctx context.Context) error {
	every := time.NewTicker(c.cfg.CheckpointInterval.D())
	defer every.Stop()
	count := time.NewTicker(time.Second)
	defer count.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-every.C:
			c.write(ctx)
		case <-count.C:
			if c.a.auditor.SinceCheckpoint() >= uint64(c.cfg.CheckpointRecords) {
				c.write(ctx)
			}
		}
	}
}

// write signs and writes a checkpoint covering every record so far.
func (c *checkpointer) write(ctx context.Context) {
	s, err := c.currentSigner(ctx)
	if err != nil {
		c.a.log.Error("audit checkpoint not written: no usable signing key", zap.Error(err))
		return
	}
	cp, _, ok, err := c.a.auditor.WriteCheckpoint(s, time.Now())
	switch {
	case err != nil:
		c.a.log.Error("audit checkpoint not written", zap.Error(err))
	case ok:
		// The auditor's external copy: the checkpoint object (about 400
		// bytes), which audit verify --checkpoint reads; not the whole
		// audit line beside it.
		c.a.log.Info("audit checkpoint", zap.Any("checkpoint", cp))
	}
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
	st := &signingStatus{}
	for _, s := range c.a.creds.current().Status() {
		if s.Name == assemble.AuditSigningCredential {
			st.Source, st.Ref, st.Loaded, st.Version, st.Error = s.Source, s.Ref, s.Loaded, s.Version, s.LastErr
		}
	}
	c.mu.Lock()
	if c.signer != nil {
		st.KeyID = c.signer.KeyID()
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
