package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
)

// tail is the end of an audit file: its last complete line, where that
// line ends, and how many bytes of a torn line follow it.
type tail struct {
	last []byte
	size int64 // offset just after the last complete line
	torn int64 // bytes after it with no newline
}

// readTail reads the end of f. A line is complete when it ends in a
// newline: the writer writes a record and its newline in one write(2) and
// cuts back any write that fails, so only a crash or a full disk mid-write
// leaves bytes after the last newline.
func readTail(f *os.File) (tail, error) {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return tail{}, err
	}
	size := st.Size()
	// Lines are at most MaxLine: a quarter MiB holds the last one; an
	// older file with longer lines gets the whole MiB.
	var start int64
	var buf []byte
	for _, chunk := range []int64{256 << 10, 1 << 20} {
		start = max(0, size-chunk)
		buf = make([]byte, size-start)
		if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return tail{}, err
		}
		if start == 0 || bytes.IndexByte(buf[:len(buf)-1], '\n') >= 0 {
			break // the chunk holds the last line whole
		}
	}
	t := tail{size: size}
	if buf[len(buf)-1] != '\n' {
		i := bytes.LastIndexByte(buf, '\n')
		if i < 0 && start > 0 {
			return tail{}, errors.New("last line longer than 1 MiB; move the file aside")
		}
		t.size = start + int64(i) + 1
		t.torn = size - t.size
		buf = buf[:i+1]
	}
	buf = bytes.TrimSuffix(buf, []byte("\n"))
	if len(buf) == 0 {
		return t, nil
	}
	t.last = buf
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		t.last = buf[i+1:]
	} else if start > 0 {
		return tail{}, errors.New("last record longer than 1 MiB; move the file aside")
	}
	return t, nil
}

// link returns the sequence number and hash of the last complete record.
func (t tail) link() (uint64, string, error) {
	if t.last == nil {
		return 0, "", nil
	}
	var link struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(t.last, &link); err != nil || link.Seq == 0 {
		return 0, "", errors.New("last line is not an audit record; move the file aside")
	}
	return link.Seq, hashLine(t.last), nil
}

// lastCheckpoint finds the newest checkpoint in the file, reading back
// from end at most 16 MiB, so that a restarted keybroker chains its next
// checkpoint to it. Not found: the checkpoint chain starts again (verify
// says so).
func lastCheckpoint(f *os.File, end int64) (uint64, string) {
	needle := []byte(`"name":"` + EventCheckpoint + `"`)
	var seq uint64
	var sig string
	_, _ = scanBack(f, end, 16<<20, func(line []byte) bool {
		if !bytes.Contains(line, needle) {
			return true
		}
		var ev struct {
			Seq   uint64 `json:"seq"`
			Event struct {
				Checkpoint *Checkpoint `json:"checkpoint"`
			} `json:"event"`
		}
		if json.Unmarshal(line, &ev) != nil || ev.Event.Checkpoint == nil {
			return true
		}
		seq, sig = ev.Seq, ev.Event.Checkpoint.Signature
		return false
	})
	return seq, sig
}
