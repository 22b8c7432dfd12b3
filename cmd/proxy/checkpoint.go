package main

import (
	"context"
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
