package audit

import (
	"bufio"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// VerifyError locates the first record that breaks the chain.
type VerifyError struct {
	File string // the file, when a trail of several is verified
	Line int    // 1-based line number in the file
	Seq  uint64 // the record's seq, if it could be read
	// After is set when the line could not be read as a record: Seq is
	// then the seq of the record before it.
	After  bool
	Reason string
	// Torn is set when the failure is a torn final line: bytes with no
	// newline that are not a record, left by a write cut short (a full
	// disk or a crash). keybroker cuts such a line off when it next opens
	// the file, and records that in an audit_torn_tail event.
	Torn bool
}

func (e *VerifyError) Error() string {
	where := ""
	if e.File != "" {
		where = e.File + ": "
	}
	if e.After {
		return fmt.Sprintf("%sline %d (after seq %d): %s", where, e.Line, e.Seq, e.Reason)
	}
	return fmt.Sprintf("%sline %d (seq %d): %s", where, e.Line, e.Seq, e.Reason)
}

// coverWindow is how far back from its own line a checkpoint may cover:
// it is signed outside the writer's lock, so records written meanwhile
// come between the record it covers and its line.
const coverWindow = 1 << 16

// maxVerifyLine is the longest line Verify reads: far above MaxLine, the
// longest the writer produces.
const maxVerifyLine = 1 << 20

// Verify checks one audit file's hash chain (VerifyTrail without keys).
// It returns the number of records, or a *VerifyError for the first break.
func Verify(r io.Reader) (int, error) {
	rep, err := VerifyTrail([]Source{{R: r}}, VerifyOptions{})
	return rep.Records, err
}

// Source is one file of a trail; a trail's files are given oldest first
// (rotated files, then the current one).
type Source struct {
	Name string
	R    io.Reader
}

// VerifyOptions say what to check beyond the hash chain.
type VerifyOptions struct {
	// Keys are the public keys checkpoints may be signed with, by key id;
	// nil: signatures are not checked.
	Keys map[string]ed25519.PublicKey
	// Checkpoint is the auditor's own copy of a checkpoint; the trail must
	// still hold the record it signed, with that hash.
	Checkpoint *Checkpoint
}

// VerifyReport is what VerifyTrail found.
type VerifyReport struct {
	Records     int
	FirstSeq    uint64
	LastSeq     uint64
	Checkpoints int
	// Signed: checkpoint signatures were checked.
	Signed bool
	// Covered is the seq the last checkpoint covers; Uncovered the records
	// after that checkpoint, which no signature covers yet.
	Covered   uint64
	Uncovered int
	// Restarts counts checkpoints that start a new checkpoint chain (a
	// restart that could not find the previous checkpoint).
	Restarts int
}

// VerifyTrail reads the files of a trail in order and checks that every
// record follows the one before it (seq up by one, prev the SHA-256 of the
// previous line), across files. The first record anchors the chain (a
// rotated trail starts mid-way). With keys, every checkpoint must be
// signed by one of them over the very records before it, and chain to the
// checkpoint before it. With the auditor's checkpoint, the trail must hold
// the record it signed. It returns a *VerifyError for the first failure.
//
// An edited, deleted, inserted or reordered line breaks the chain; a chain
// recomputed after an edit no longer matches the next checkpoint's
// signature; a cut tail no longer holds the auditor's later checkpoint.
func VerifyTrail(srcs []Source, opts VerifyOptions) (VerifyReport, error) {
	rep := VerifyReport{Signed: opts.Keys != nil}
	var (
		records      int
		lastSeq      uint64
		lastHash     [32]byte
		recent       = make([][32]byte, coverWindow) // the hashes of the last records, by seq
		covered      uint64
		lastSig      string
		cpLineSeq    uint64
		auditorFound bool
	)
	if cp := opts.Checkpoint; cp != nil && opts.Keys != nil {
		if err := cp.Verify(opts.Keys); err != nil {
			return rep, &VerifyError{Reason: "the auditor's checkpoint: " + err.Error()}
		}
	}
	for _, src := range srcs {
		err := ScanTrail(src.R, nil, func(n int, l *Line, _ *struct{}) error {
			fail := func(seq uint64, reason string) error {
				return &VerifyError{File: src.Name, Line: n, Seq: seq, Reason: reason}
			}
			seq, prev, hasPrev := l.Seq, l.Prev, l.HasPrev
			var event *struct {
				Name       string      `json:"name"`
				Checkpoint *Checkpoint `json:"checkpoint"`
			}
			if !l.Fast || l.Checkpoint {
				// No fixed prefix (an older writer, a hand-made line), or a
				// checkpoint: decoded whole.
				var link struct {
					Seq   uint64 `json:"seq"`
					Prev  string `json:"prev"`
					Event *struct {
						Name       string      `json:"name"`
						Checkpoint *Checkpoint `json:"checkpoint"`
					} `json:"event"`
				}
				if err := json.Unmarshal(l.Bytes, &link); err != nil || link.Seq == 0 {
					if !l.Complete {
						return &VerifyError{File: src.Name, Line: n, Seq: lastSeq, After: true, Torn: true, Reason: fmt.Sprintf(
							"torn final line: %d bytes with no newline, not a complete record (a write cut short by a full disk or a crash; keybroker cuts it off on its next start)", len(l.Bytes))}
					}
					return &VerifyError{File: src.Name, Line: n, Seq: lastSeq, After: true, Reason: "not an audit record"}
				}
				seq, event = link.Seq, link.Event
				prev, hasPrev = ParsePrev(link.Prev)
			}
			if records > 0 {
				switch {
				case seq != lastSeq+1:
					return fail(seq, fmt.Sprintf("seq %d follows %d: records missing or out of order", seq, lastSeq))
				case !hasPrev || prev != lastHash:
					return fail(seq, "prev does not match the line before: it was altered, or a line was removed or inserted")
				}
			} else {
				rep.FirstSeq = seq
			}
			if event != nil && event.Name == EventCheckpoint {
				cp := event.Checkpoint
				switch {
				case cp == nil:
					return fail(seq, "a checkpoint without its signature")
				case records == 0 || cp.Seq < rep.FirstSeq:
					// The trail given starts after what it covers: nothing to compare.
				case cp.Seq > lastSeq || lastSeq-cp.Seq >= coverWindow || cp.Seq < covered:
					return fail(seq, fmt.Sprintf("the checkpoint covers seq %d, which is not among the %d records before it", cp.Seq, coverWindow))
				case cp.Hash != hex.EncodeToString(recent[cp.Seq%coverWindow][:]):
					return fail(seq, "the checkpoint does not match the record it covers: records it covers were altered")
				}
				if opts.Keys != nil {
					if err := cp.Verify(opts.Keys); err != nil {
						return fail(seq, "checkpoint "+err.Error())
					}
				}
				switch {
				case lastSig == "" || cp.PrevSignature == lastSig:
				case cp.PrevSignature == "":
					rep.Restarts++
				default:
					return fail(seq, "the checkpoint does not follow the previous checkpoint: checkpoints were removed or replaced")
				}
				lastSig, cpLineSeq, covered = cp.Signature, seq, cp.Seq
				rep.Checkpoints++
				rep.Covered = cp.Seq
			}
			records++
			lastSeq, lastHash = seq, l.Hash
			recent[seq%coverWindow] = l.Hash
			if cp := opts.Checkpoint; cp != nil && seq == cp.Seq {
				if hex.EncodeToString(lastHash[:]) != cp.Hash {
					return fail(seq, "this record is not the one the auditor's checkpoint signed: the trail was rewritten")
				}
				auditorFound = true
			}
			rep.Records = records
			rep.LastSeq = seq
			return nil
		})
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) {
				err = &VerifyError{File: src.Name, Line: records + 1, Seq: lastSeq, After: true, Reason: err.Error()}
			}
			return rep, err
		}
	}
	if cp := opts.Checkpoint; cp != nil && !auditorFound {
		reason := fmt.Sprintf("the trail ends at seq %d, before the auditor's checkpoint at seq %d: records were cut off", rep.LastSeq, cp.Seq)
		if records == 0 || rep.FirstSeq > cp.Seq {
			reason = fmt.Sprintf("the trail given does not reach back to the auditor's checkpoint at seq %d (it starts at %d): give the older files too", cp.Seq, rep.FirstSeq)
		}
		return rep, &VerifyError{Line: records, Seq: rep.LastSeq, Reason: reason}
	}
	if cpLineSeq > 0 {
		// Every record after the one the last checkpoint covers, but that
		// checkpoint's own line.
		rep.Uncovered = int(rep.LastSeq - rep.Covered - 1)
	} else {
		rep.Uncovered = records
	}
	return rep, nil
}

// readLine returns the next line without its newline, whether it had one,
// and nil at the end of input. A line over maxVerifyLine is an error.
func readLine(br *bufio.Reader) ([]byte, bool, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxVerifyLine {
			return nil, false, fmt.Errorf("line longer than %d bytes: not a record keybroker writes", maxVerifyLine)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) == 0 {
				return nil, false, nil
			}
			return line, false, nil
		default:
			return nil, false, err
		}
	}
}
