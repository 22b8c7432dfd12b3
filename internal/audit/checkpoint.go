package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Checkpoint signs the audit chain up to a record: the seq and line hash
// of the last record it covers, the key that signed, and the signature of
// the previous checkpoint, so checkpoints chain too. It is written into
// the trail as the event "checkpoint" and copied to the operational log,
// so a copy lives outside the audit file's storage. Anyone who can write
// the file can recompute the hash chain, but not these signatures.
type Checkpoint struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	// KeyID is the first 8 bytes of the SHA-256 of the public key, hex.
	KeyID string `json:"key_id"`
	// PrevSignature is the previous checkpoint's signature ("" for the
	// first in this process's trail).
	PrevSignature string `json:"prev_signature"`
	// Signature is Ed25519 over SignedBytes, base64.
	Signature string `json:"signature"`
	// KeyName and KeyVersion name a key kept elsewhere (a Vault transit
	// key) and the version that signed; not part of what is signed: the
	// KeyID is.
	KeyName    string `json:"key_name,omitempty"`
	KeyVersion int    `json:"key_version,omitempty"`
	// Replica names the keybroker whose trail it signs (audit.replica).
	Replica string `json:"replica,omitempty"`
}

// KeySigner signs with a key keybroker may not hold: Key says which key
// (and version) the next signature will be made with; Sign makes it. The
// Ed25519 seed of audit.signing.credential (Signer) and a Vault transit
// key (package secrets) are both one.
type KeySigner interface {
	Key(ctx context.Context) (pub ed25519.PublicKey, name string, version int, err error)
	Sign(ctx context.Context, version int, msg []byte) ([]byte, error)
}

// SignCheckpoint names the key in cp and signs it with s.
func SignCheckpoint(ctx context.Context, s KeySigner, cp *Checkpoint) error {
	pub, name, version, err := s.Key(ctx)
	if err != nil {
		return err
	}
	cp.KeyID, cp.KeyName, cp.KeyVersion = KeyID(pub), name, version
	sig, err := s.Sign(ctx, version, cp.SignedBytes())
	if err != nil {
		return err
	}
	cp.Signature = base64.StdEncoding.EncodeToString(sig)
	return nil
}

// SignedBytes is what a checkpoint's signature covers.
func (c Checkpoint) SignedBytes() []byte {
	return []byte("keybroker-audit-checkpoint-v1\n" + strconv.FormatUint(c.Seq, 10) + "\n" + c.Hash + "\n" +
		c.KeyID + "\n" + c.PrevSignature + "\n")
}

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// Verify checks the checkpoint's signature with the key its KeyID names.
func (c Checkpoint) Verify(keys map[string]ed25519.PublicKey) error {
	pub, ok := keys[c.KeyID]
	if !ok {
		return fmt.Errorf("signed by key %s, which is not among the public keys given", c.KeyID)
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || !ed25519.Verify(pub, c.SignedBytes(), sig) {
		return errors.New("the signature does not verify: the checkpoint or the records it covers were altered")
	}
	return nil
}

// NewSigningKey returns a new Ed25519 key as base64 of its 32-byte seed and
// of its public key.
func NewSigningKey() (seed, public string, err error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return "", "", err
	}
	return base64.StdEncoding.EncodeToString(priv.Seed()), base64.StdEncoding.EncodeToString(pub), nil
}

// ParsePublicKey reads a base64 Ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not a base64 Ed25519 public key (32 bytes)")
	}
	return ed25519.PublicKey(b), nil
}

// Signer signs checkpoints with a key given as base64 of its 32-byte seed.
type Signer struct {
	priv  ed25519.PrivateKey
	keyID string
}

// NewSigner parses the seed. The error never shows it.
func NewSigner(seed string) (*Signer, error) {
	b, err := base64.StdEncoding.DecodeString(seed)
	if err != nil || len(b) != ed25519.SeedSize {
		return nil, errors.New("private_key is not base64 of a 32-byte Ed25519 seed (keybroker audit keygen makes one)")
	}
	priv := ed25519.NewKeyFromSeed(b)
	return &Signer{priv: priv, keyID: KeyID(priv.Public().(ed25519.PublicKey))}, nil
}

// KeyID is the signer's key id.
func (s *Signer) KeyID() string { return s.keyID }

// Key is the signer's public key (KeySigner); it has no name or version.
func (s *Signer) Key(context.Context) (ed25519.PublicKey, string, int, error) {
	return s.priv.Public().(ed25519.PublicKey), "", 0, nil
}

// Sign signs msg (KeySigner).
func (s *Signer) Sign(_ context.Context, _ int, msg []byte) ([]byte, error) {
	return ed25519.Sign(s.priv, msg), nil
}

// WriteCheckpoint appends a checkpoint covering every record written so
// far, signed by s, and returns it with its exact line. It does nothing
// (and returns false) when no record was written since the last one.
func (w *Writer) WriteCheckpoint(s *Signer, at time.Time) (Checkpoint, []byte, bool, error) {
	cp, ok := w.NextCheckpoint()
	if !ok {
		return Checkpoint{}, nil, false, nil
	}
	if err := SignCheckpoint(context.Background(), s, &cp); err != nil {
		return Checkpoint{}, nil, false, err
	}
	line, err := w.AppendCheckpoint(cp, at)
	return cp, line, err == nil, err
}

// NextCheckpoint returns the checkpoint to sign now, unsigned: the last
// record's seq and hash and the previous checkpoint's signature; false
// when no record was written since the last checkpoint. It is signed
// outside the writer's lock (a Vault round trip must not hold calls), and
// appended with AppendCheckpoint: it then covers a record a few lines
// before it.
func (w *Writer) NextCheckpoint() (Checkpoint, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.scanned {
		// The first checkpoint of this process chains to the last one in
		// the file (a restart), found once, here rather than at every open.
		w.scanned = true
		w.waitIdle()
		if w.file != nil && w.checkpointSeq == 0 {
			w.checkpointSeq, w.lastSignature = lastCheckpoint(w.file, w.size)
		}
	}
	if w.seq == 0 || w.seq == w.checkpointSeq {
		return Checkpoint{}, false
	}
	w.signingSince = time.Now()
	return Checkpoint{Seq: w.seq, Hash: w.prev, PrevSignature: w.lastSignature, Replica: w.replica}, true
}

// AppendCheckpoint appends cp, signed, as the event checkpoint and
// returns its exact line.
func (w *Writer) AppendCheckpoint(cp Checkpoint, at time.Time) ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ev := Event{Name: EventCheckpoint, Checkpoint: &cp}
	var line []byte
	var lineSeq uint64
	err := w.appendLocked(func(b []byte, seq uint64, prev string) ([]byte, error) {
		out, err := eventAt(ev, at)(b, seq, prev)
		line, lineSeq = append([]byte(nil), out[len(b):]...), seq
		return out, err
	})
	if err != nil {
		return nil, err
	}
	w.checkpointSeq, w.lastSignature = lineSeq, cp.Signature
	w.unsignedSince = time.Time{}
	if w.seq > lineSeq || lineSeq > cp.Seq+1 {
		// Records written while it was signed, before or after its line.
		w.unsignedSince = w.signingSince
	}
	return line, nil
}

// OldestUnsigned is when the oldest record that no checkpoint covers yet
// was written; false when every record is covered (or none written).
func (w *Writer) OldestUnsigned() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unsignedSince, !w.unsignedSince.IsZero()
}

// SinceCheckpoint is how many records were written since the last
// checkpoint (the checkpoint itself not counted).
func (w *Writer) SinceCheckpoint() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.checkpointSeq == 0 {
		return w.seq
	}
	return w.seq - w.checkpointSeq
}

// EventCheckpoint names checkpoint events.
const EventCheckpoint = "checkpoint"
