package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// EventCallInterrupted names the event that closes a begin line with no
// end record: keybroker stopped (or its disk filled) while the call was at
// the vendor, which may have acted on it.
const EventCallInterrupted = "call_interrupted"

// EventStarted names the event keybroker writes when it starts serving;
// recovery scans back to the one before.
const EventStarted = "started"

// EventFileOpened heads every new audit file of a named replica
// (Options.Replica): whose file it is.
const EventFileOpened = "audit_file_opened"

// RecoveryLimit is how far back from its end CloseInterrupted reads the
// file at most.
const RecoveryLimit = 256 << 20

// recoveryLimit is RecoveryLimit; tests lower it.
var recoveryLimit int64 = RecoveryLimit

// interrupted is the call_interrupted event of a call whose record rec
// could not be written.
func interrupted(rec *Record) Event {
	return Event{Name: EventCallInterrupted, BeginSeq: rec.BeginSeq, RequestID: rec.RequestID,
		Upstream: rec.Upstream, Method: rec.Method, Path: rec.Path, Operation: rec.Operation, Tier: rec.Tier, Caller: rec.Caller,
		Begun: formatTime(time.Time(rec.Time)), Detail: interruptedDetail}
}

const interruptedDetail = "the call left for the vendor but has no end record: the vendor may have acted on it"

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// nameUnended writes call_interrupted for the calls whose end record
// failed, once the trail is writable again (w.mu held). A call whose
// event cannot be written either stays on the list, and the trail is
// not writable yet: the error says so.
func (w *Writer) nameUnended(now time.Time) error {
	for len(w.unended) > 0 {
		ev := w.unended[0]
		if err := w.appendLocked(eventAt(ev, now)); err != nil {
			return err
		}
		w.unended = w.unended[1:]
	}
	w.unended = nil
	return nil
}

// Recovery is what CloseInterrupted found.
type Recovery struct {
	// Interrupted are the call_interrupted events written, in seq order
	// of their begin lines.
	Interrupted []Event
	// Capped: the previous started event was not within RecoveryLimit of
	// the end, so begin lines before that were not looked at.
	Capped bool
}

// CloseInterrupted reads the file back to the previous started event (at
// most RecoveryLimit bytes) and writes a call_interrupted event for every
// begin line that has no end record (a record or an event carrying its
// begin_seq). Run it once at start, before the started event and before
// serving. A trail that is not a file has nothing to read back.
func (w *Writer) CloseInterrupted(now time.Time) (Recovery, error) {
	if w.path == "" {
		return Recovery{}, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitIdle()
	if w.file == nil {
		return Recovery{}, errors.New("audit file closed")
	}
	open, capped, err := openBegins(w.file, w.size, recoveryLimit)
	if err != nil {
		return Recovery{}, fmt.Errorf("read back audit file %s: %w", w.path, err)
	}
	rec := Recovery{Capped: capped}
	for _, ev := range open {
		if err := w.appendLocked(eventAt(ev, now)); err != nil {
			return rec, err
		}
		rec.Interrupted = append(rec.Interrupted, ev)
	}
	return rec, nil
}

// beginLine is what a begin line tells of its call.
type beginLine struct {
	Seq       uint64 `json:"seq"`
	Time      string `json:"time"`
	RequestID string `json:"request_id"`
	Caller    string `json:"caller"`
	Method    string `json:"method"`
	Upstream  string `json:"upstream"`
	Path      string `json:"path"`
	Operation string `json:"operation"`
	Tier      string `json:"tier"`
}

// openBegins returns the call_interrupted events of the begin lines in f
// (up to end) after the last started event that nothing closes. Lines are
// read from the end backwards, so a call's end comes before its begin:
// the set of closed seqs holds only calls whose begin is yet to come.
func openBegins(f *os.File, end, limit int64) (open []Event, capped bool, err error) {
	var (
		needBegin   = []byte(`"type":"begin"`)
		needClose   = []byte(`"begin_seq":`)
		needStarted = []byte(`"name":"` + EventStarted + `"`)
	)
	closed := map[uint64]bool{}
	capped, err = scanBack(f, end, limit, func(line []byte) bool {
		switch {
		case bytes.Contains(line, needBegin):
			var b beginLine
			if json.Unmarshal(line, &b) != nil || b.Seq == 0 {
				return true
			}
			if closed[b.Seq] {
				delete(closed, b.Seq)
				return true
			}
			open = append(open, Event{Name: EventCallInterrupted, BeginSeq: b.Seq, RequestID: b.RequestID,
				Upstream: b.Upstream, Method: b.Method, Path: b.Path, Operation: b.Operation, Tier: b.Tier, Caller: b.Caller, Begun: b.Time, Detail: interruptedDetail})
		case bytes.Contains(line, needClose):
			var c struct {
				BeginSeq uint64 `json:"begin_seq"`
				Event    *struct {
					BeginSeq uint64 `json:"begin_seq"`
				} `json:"event"`
			}
			if json.Unmarshal(line, &c) != nil {
				return true
			}
			if c.Event != nil {
				c.BeginSeq = c.Event.BeginSeq
			}
			if c.BeginSeq != 0 {
				closed[c.BeginSeq] = true
			}
		case bytes.Contains(line, needStarted):
			return false
		}
		return true
	})
	slices.Reverse(open)
	return open, capped, err
}

// scanBack calls fn on each whole line of f before end, last first, until
// fn returns false, the file's start, or limit bytes read (capped true).
func scanBack(f *os.File, end, limit int64, fn func(line []byte) bool) (capped bool, err error) {
	const chunk = 1 << 20
	var carry []byte
	pos := end
	for pos > 0 {
		if end-pos >= limit {
			return true, nil
		}
		start := max(0, pos-chunk, end-limit)
		buf := make([]byte, pos-start, pos-start+int64(len(carry)))
		if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		buf = append(buf, carry...)
		lines := bytes.Split(buf, []byte("\n"))
		carry = lines[0] // may be cut: joined with the next chunk back
		first := 1
		if start == 0 {
			first = 0 // the file's first line is whole
		}
		for i := len(lines) - 1; i >= first; i-- {
			if len(lines[i]) > 0 && !fn(lines[i]) {
				return false, nil
			}
		}
		pos = start
	}
	return false, nil
}
