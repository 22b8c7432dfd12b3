package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Chain follows a trail's hash chain one record at a time: every record's
// seq is one more than the one before it, and its prev the SHA-256 of the
// line before it, across files. The first record anchors the chain (a
// rotated trail starts mid-way). VerifyTrail and the auditor's report both
// walk a trail with it, so they agree on what an intact chain is.
type Chain struct {
	// Records is how many records were followed; FirstSeq and LastSeq the
	// seq of the first and the last.
	Records           int
	FirstSeq, LastSeq uint64
	last              [sha256.Size]byte
}

// Check says why a record with seq and prev (a hash in hex, or "" when
// hasPrev is false) cannot follow the records so far, or "" when it can.
func (c *Chain) Check(seq uint64, prev [sha256.Size]byte, hasPrev bool) string {
	switch {
	case c.Records == 0:
		return ""
	case seq != c.LastSeq+1:
		return fmt.Sprintf("seq %d follows %d: records missing or out of order", seq, c.LastSeq)
	case !hasPrev || prev != c.last:
		return "prev does not match the line before: it was altered, or a line was removed or inserted"
	}
	return ""
}

// Advance makes the line whose seq is seq and hash is hash the last record
// of the chain.
func (c *Chain) Advance(seq uint64, hash [sha256.Size]byte) {
	if c.Records == 0 {
		c.FirstSeq = seq
	}
	c.Records++
	c.LastSeq, c.last = seq, hash
}

// ParsePrev reads a line's prev as the chain compares it: 64 lower-case
// hex digits; false for anything else ("" for a chain's first record).
func ParsePrev(prev string) ([sha256.Size]byte, bool) {
	var h [sha256.Size]byte
	if len(prev) != 2*sha256.Size || !lowerHex([]byte(prev)) {
		return h, false
	}
	_, err := hex.Decode(h[:], []byte(prev))
	return h, err == nil
}
