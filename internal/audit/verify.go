package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// VerifyError locates the first record that breaks the chain.
type VerifyError struct {
	Line   int    // 1-based line number in the file
	Seq    uint64 // the record's seq, if it could be read
	Reason string
	// Torn is set when the failure is a torn final line: bytes with no
	// newline that are not a record, left by a write cut short (a full
	// disk or a crash). keybroker cuts such a line off when it next opens
	// the file, and records that in an audit_torn_tail event.
	Torn bool
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// maxVerifyLine is the longest line Verify reads: far above MaxLine, the
// longest the writer produces.
const maxVerifyLine = 1 << 20

// Verify reads an audit file and checks that every record follows the one
// before it: seq goes up by one and prev is the SHA-256 of the previous
// line. The first record anchors the chain (a rotated file starts mid-way).
// It returns the number of records, or a *VerifyError for the first break.
//
// An edited, deleted, inserted or reordered line breaks the chain at the
// line after it. An edit of the very last line can only be seen against a
// copy of its hash kept elsewhere (for example the next file's first prev).
func Verify(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		n        int
		prevSeq  uint64
		prevHash string
	)
	for {
		line, complete, err := readLine(br)
		if err != nil {
			return n, &VerifyError{Line: n + 1, Reason: err.Error()}
		}
		if line == nil {
			return n, nil
		}
		n++
		var link struct {
			Seq  uint64 `json:"seq"`
			Prev string `json:"prev"`
		}
		if err := json.Unmarshal(line, &link); err != nil || link.Seq == 0 {
			if !complete {
				return n - 1, &VerifyError{Line: n, Torn: true, Reason: fmt.Sprintf(
					"torn final line: %d bytes with no newline, not a complete record (a write cut short by a full disk or a crash; keybroker cuts it off on its next start)", len(line))}
			}
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
