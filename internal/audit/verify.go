package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
)

// VerifyError locates the first record that breaks the chain.
type VerifyError struct {
	Line   int    // 1-based line number in the file
	Seq    uint64 // the record's seq, if it could be read
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// Verify reads an audit file and checks that every record follows the one
// before it: seq goes up by one and prev is the SHA-256 of the previous
// line. The first record anchors the chain (a rotated file starts mid-way).
// It returns the number of records, or a *VerifyError for the first break.
//
// An edited, deleted, inserted or reordered line breaks the chain at the
// line after it. An edit of the very last line can only be seen against a
// copy of its hash kept elsewhere (for example the next file's first prev).
func Verify(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var (
		n        int
		prevSeq  uint64
		prevHash string
	)
	for sc.Scan() {
		line := sc.Bytes()
		n++
		var link struct {
			Seq  uint64 `json:"seq"`
			Prev string `json:"prev"`
		}
		if err := json.Unmarshal(line, &link); err != nil || link.Seq == 0 {
			return n - 1, &VerifyError{Line: n, Reason: "not an audit record"}
		}
		if n > 1 {
			if link.Seq != prevSeq+1 {
				reason := fmt.Sprintf("seq %d follows %d: records missing or out of order", link.Seq, prevSeq)
				return n - 1, &VerifyError{Line: n, Seq: link.Seq, Reason: reason}
			}
			if link.Prev != prevHash {
				return n - 1, &VerifyError{Line: n, Seq: link.Seq, Reason: "prev does not match the line before: it was altered, or a line was removed or inserted"}
			}
		}
		prevSeq, prevHash = link.Seq, hashLine(line)
	}
	if err := sc.Err(); err != nil {
		return n, &VerifyError{Line: n + 1, Reason: err.Error()}
	}
	return n, nil
}
