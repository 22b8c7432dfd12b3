package audit

import (
	"bufio"
	"fmt"
)

// Chain follows a trail's hash chain one record at a time: every record's
// seq is one more than the one before it, and its prev the SHA-256 of the
// line before it, across files. The first record anchors the chain (a
// rotated trail starts mid-way). VerifyTrail and the auditor's report both
// walk a trail with it, so they agree on what an intact chain is.
type Chain struct {
	// Records is how many records were followed; FirstSeq and LastSeq the
	// seq of the first and the last; LastHash the SHA-256 of the last line.
	Records           int
	FirstSeq, LastSeq uint64
	LastHash          string
}

// Check says why a record with seq and prev cannot follow the records so
// far, or "" when it can.
func (c *Chain) Check(seq uint64, prev string) string {
	switch {
	case c.Records == 0:
		return ""
	case seq != c.LastSeq+1:
		return fmt.Sprintf("seq %d follows %d: records missing or out of order", seq, c.LastSeq)
	case prev != c.LastHash:
		return "prev does not match the line before: it was altered, or a line was removed or inserted"
	}
	return ""
}

// Advance makes line, whose seq is seq, the last record of the chain.
func (c *Chain) Advance(seq uint64, line []byte) {
	if c.Records == 0 {
		c.FirstSeq = seq
	}
	c.Records++
	c.LastSeq, c.LastHash = seq, hashLine(line)
}

// NextLine returns the next line of a trail without its newline, whether it
// had one (a final line without one may be torn), and nil at the end. A
// line longer than any record keybroker writes is an error.
func NextLine(br *bufio.Reader) (line []byte, complete bool, err error) {
	return readLine(br)
}
