package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnavailable means the audit trail cannot be written; the proxy refuses
// calls (503 audit_unavailable) until it can.
var ErrUnavailable = errors.New("audit trail unavailable")

// Writer appends records, one JSON object per line, each carrying its
// sequence number and the SHA-256 of the line before it. It is safe for
// concurrent use. Writes are group-committed: a record is encoded and
// chained at once, and one write(2) to the file (opened O_APPEND) carries
// every record that arrived while the previous write was in the kernel.
// Write returns only when its own record is in the file, so nothing a
// caller was told is written sits in a buffer to be lost.
//
// After a failed write (or sync) the writer is marked failed: Check reports
// it, so the proxy refuses calls, and, at most once a second and not in the
// second after a failure, reopens the file and writes an audit_recovered
// event, then a call_interrupted for each call whose end record was lost;
// only that probe ends the failure. A failed or short write is cut back off
// the file, so the chain never ends in a torn line; a torn line found when
// the file is opened (a crash mid-write) is cut off too, and the cut is
// recorded in an audit_torn_tail event.
type Writer struct {
	path string // empty: out is not a file we own (stdout, a test buffer)

	mu        sync.Mutex
	out       io.Writer
	file      *os.File
	size      int64 // file offset after the last durable record
	seq       uint64
	prev      string
	failed    error
	lastProbe time.Time

	// Group commit. pending holds the records chained but not yet written
	// (count of them); one writer at a time (flushing) writes them while
	// the others wait on cond. durable/durablePrev are the last record in
	// the file; a failed write rolls the chain back to it and bumps epoch,
	// which fails every record of the batch and after it.
	cond        sync.Cond
	pending     []byte
	spare       []byte
	count       int64
	flushing    bool
	durable     uint64
	durablePrev string
	epoch       uint64
	// checkpointSeq and lastSignature are the last checkpoint's seq and
	// signature, which the next checkpoint chains to; scanned says the
	// file was searched for them (once, at the first checkpoint).
	checkpointSeq uint64
	lastSignature string
	scanned       bool
	// replica heads every new file with audit_file_opened (Options).
	replica string
	// unsignedSince is when the oldest record no checkpoint covers yet was
	// written (zero: none); signingSince when the checkpoint being signed
	// was taken (NextCheckpoint).
	unsignedSince time.Time
	signingSince  time.Time

	// Durability (sync.go): sync is audit.sync and syncer the call that
	// puts the file on stable storage; synced is the last seq synced (the
	// second watermark, after durable), syncing says a sync is in flight,
	// and syncTimer is armed while a written line waits for one.
	sync      Sync
	syncer    func(*os.File) error
	synced    uint64
	syncing   bool
	syncTimer *time.Timer
	// syncBroken: a sync failed; a write that succeeds does not prove
	// the trail again, only a reopen that syncs (Check) does.
	syncBroken bool
	// unsyncable: the path is not a regular file (a device, a FIFO).
	unsyncable bool
	// unended are calls whose begin line was written but whose end
	// record was not (a full disk): named in call_interrupted events once
	// the trail is writable again. Bounded by the calls in flight: a
	// failed trail forwards nothing new.
	unended []Event

	writeErrors atomic.Int64
	written     atomic.Int64
}

// Open opens (creating it, mode 0600) the audit file at path for appending,
// and continues the hash chain from its last record, with the default
// Options.
func Open(path string) (*Writer, error) { return OpenWith(path, Options{}) }

// OpenWith is Open with opts.
func OpenWith(path string, opts Options) (*Writer, error) {
	w := &Writer{path: path, sync: opts.Sync, syncer: opts.Syncer, replica: opts.Replica}
	if w.syncer == nil {
		w.syncer = fdatasync
	}
	w.cond.L = &w.mu
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// NewWriter writes records to out, starting a new chain (stdout, tests).
func NewWriter(out io.Writer) *Writer {
	w := &Writer{out: out}
	w.cond.L = &w.mu
	return w
}

// open (re)opens the file, cuts off a torn trailing line, and continues the
// chain from the last record. The caller holds mu or owns w alone. A torn
// tail is recorded in an event once the chain is known.
func (w *Writer) open() error {
	w.waitIdle()
	_, statErr := os.Lstat(w.path)
	f, err := os.OpenFile(w.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit file %s: %w", w.path, err)
	}
	// A device or a pipe (/dev/stdout, a shipper's FIFO) has nothing to
	// sync, as stdout has not.
	w.unsyncable = !st.Mode().IsRegular()
	if w.sync != SyncNone && !w.unsyncable {
		// What the last run wrote is synced once; a file just created is
		// made to survive a power loss by syncing its directory.
		err = w.syncer(f)
		if err == nil && errors.Is(statErr, os.ErrNotExist) {
			err = syncDir(w.path)
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("sync audit file %s: %w", w.path, err)
		}
	}
	tail, err := readTail(f)
	if err == nil && tail.torn > 0 {
		err = f.Truncate(tail.size)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("audit file %s: %w", w.path, err)
	}
	seq, prev, err := tail.link()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit file %s: %w", w.path, err)
	}
	if w.file != nil {
		if w.sync != SyncNone && !w.unsyncable {
			_ = w.syncer(w.file) // the last lines of a file rotated away
		}
		w.file.Close()
	}
	w.file, w.out, w.size = f, f, tail.size
	// A reopened file after rotation is empty: the chain goes on from the
	// last record written to the old one.
	if seq > 0 {
		w.seq, w.prev = seq, prev
		w.durable, w.durablePrev = seq, prev
	}
	w.synced, w.syncBroken = w.durable, false
	if tail.size == 0 && tail.torn == 0 && w.replica != "" && !w.unsyncable {
		// A new file (not a device or a pipe): its first line says whose
		// it is.
		ev := Event{Name: EventFileOpened, Replica: w.replica}
		if err := w.appendLocked(eventAt(ev, time.Now())); err != nil {
			return err
		}
	}
	if tail.torn > 0 {
		ev := Event{Name: "audit_torn_tail", Detail: fmt.Sprintf(
			"cut off a torn trailing line (a write cut short by a full disk or a crash): %d bytes at offset %d", tail.torn, tail.size)}
		if err := w.appendLocked(eventAt(ev, time.Now())); err != nil {
			return err
		}
	}
	return nil
}

func hashLine(line []byte) string {
	s := sha256.Sum256(line)
	var h [64]byte
	hex.Encode(h[:], s[:])
	return string(h[:])
}

// Write sets rec's Seq and Prev and appends it as one line; it returns
// once the line is in the file. Every field is first cut to its bound
// (Record.Bound).
// A call record that ends a begin line (BeginSeq set) and cannot be
// written leaves the call named in a call_interrupted event once the
// trail is writable again (Check).
func (w *Writer) Write(rec *Record) error {
	rec.Bound()
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.appendLocked(func(b []byte, seq uint64, prev string) ([]byte, error) {
		rec.Seq, rec.Prev = seq, prev
		return appendRecord(b, rec), nil
	})
	if err != nil && rec.BeginSeq != 0 {
		w.unended = append(w.unended, interrupted(rec))
	}
	return err
}

// Begin appends the begin line of a call about to be forwarded: its time
// (the call's start), who sent it, what it asks and with which credential
// and policy, bounded and redacted as its record is, but none of its
// results. It returns the line's seq once the line is in the file (and on
// stable storage, when the writer's Sync says so for rec.Method), so that
// whatever ends keybroker afterwards, the trail says the call was sent.
// seq is set when the line was written even if its sync failed: the call's
// record then ends it.
func (w *Writer) Begin(rec *Record) (seq uint64, err error) {
	rec.Bound()
	w.mu.Lock()
	defer w.mu.Unlock()
	err = w.appendLocked(func(b []byte, s uint64, prev string) ([]byte, error) {
		seq = s
		return appendBegin(b, rec, s, prev), nil
	})
	if err != nil {
		return 0, err
	}
	if w.sync.begins(rec.Method) {
		err = w.syncTo(seq)
	}
	return seq, err
}

// eventLine is the shape of an event record: the chain links, the type, the
// time and the event, without a call's fields.
type eventLine struct {
	Seq   uint64 `json:"seq"`
	Prev  string `json:"prev"`
	Type  string `json:"type"`
	Time  Time   `json:"time"`
	Event *Event `json:"event"`
}

// WriteEvent appends a lifecycle event record.
func (w *Writer) WriteEvent(ev Event, at time.Time) error {
	ev.bound()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.appendLocked(eventAt(ev, at))
}

func eventAt(ev Event, at time.Time) func(b []byte, seq uint64, prev string) ([]byte, error) {
	return func(b []byte, seq uint64, prev string) ([]byte, error) {
		line, err := json.Marshal(&eventLine{Seq: seq, Prev: prev, Type: TypeEvent, Time: Time(at), Event: &ev})
		return append(b, line...), err
	}
}

// appendLocked chains the record enc encodes (given its seq and prev) onto
// the pending batch and waits until a write carried it into the file: the
// first waiter with nothing in flight writes the batch (group commit).
// w.mu is held; it is released while a batch is written.
func (w *Writer) appendLocked(enc func(b []byte, seq uint64, prev string) ([]byte, error)) error {
	start := len(w.pending)
	b, err := enc(w.pending, w.seq+1, w.prev)
	if err != nil {
		w.pending = w.pending[:start]
		return fmt.Errorf("encode audit record: %w", err)
	}
	line := b[start:]
	w.pending = append(b, '\n')
	w.count++
	w.seq++
	w.prev = hashLine(line)
	mine, epoch := w.seq, w.epoch
	for {
		switch {
		case w.epoch != epoch:
			return fmt.Errorf("%w: %w", ErrUnavailable, w.failed)
		case w.durable >= mine:
			return nil
		case !w.flushing:
			w.flush()
		default:
			w.cond.Wait()
		}
	}
}

// flush writes the pending batch in one write(2), with w.mu released
// meanwhile. A failed or short write is cut back off the file and rolls
// the chain back to the last durable record: every record of the batch,
// and any chained after it, fails.
func (w *Writer) flush() {
	w.flushing = true
	batch, n, endSeq, endPrev := w.pending, w.count, w.seq, w.prev
	w.pending, w.spare, w.count = w.spare[:0], nil, 0
	out := w.out
	w.mu.Unlock()
	_, err := out.Write(batch)
	w.mu.Lock()
	if err != nil {
		w.failed = err
		// The next reopen and probe a second from now: a small probe
		// record that fits where this write did not proves nothing.
		w.lastProbe = time.Now()
		w.writeErrors.Add(n + w.count)
		if w.file != nil {
			// A short write must not leave a torn line as the chain's
			// end; if this fails too, the next open cuts it.
			_ = w.file.Truncate(w.size)
		}
		w.seq, w.prev = w.durable, w.durablePrev
		w.pending, w.count = w.pending[:0], 0
		w.epoch++
	} else {
		// A write that works does not end a failure: only Check's probe
		// does, with audit_recovered and the calls it left unnamed.
		w.size += int64(len(batch))
		w.durable, w.durablePrev = endSeq, endPrev
		w.written.Add(n)
		if w.unsignedSince.IsZero() {
			w.unsignedSince = time.Now()
		}
		w.armSync()
	}
	w.spare = batch[:0]
	w.flushing = false
	w.cond.Broadcast()
}

// waitIdle waits until no batch is being written and no sync runs (w.mu
// held).
func (w *Writer) waitIdle() {
	for w.flushing || w.syncing {
		w.cond.Wait()
	}
}

// Check returns nil when the trail can be written. After a failure it
// tries, at most once a second, to reopen the file and write an
// audit_recovered event: only a record actually written proves the trail
// works again.
func (w *Writer) Check() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed == nil {
		return nil
	}
	failed := w.failed
	if time.Since(w.lastProbe) > time.Second {
		w.lastProbe = time.Now()
		if w.path != "" {
			_ = w.open()
		}
		now := time.Now()
		ev := Event{Name: "audit_recovered", Detail: "after: " + failed.Error()}
		if !w.syncBroken && w.appendLocked(eventAt(ev, now)) == nil && w.nameUnended(now) == nil {
			w.failed = nil
			return nil
		}
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, w.failed)
}

// Reopen closes and reopens the file (after logrotate moved it; SIGHUP).
func (w *Writer) Reopen() error {
	if w.path == "" {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.open(); err != nil {
		w.failed = err
		return err
	}
	w.failed = nil
	return nil
}

// Close syncs and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitIdle()
	if w.syncTimer != nil {
		w.syncTimer.Stop()
		w.syncTimer = nil
	}
	if w.file == nil {
		return nil
	}
	err := errors.Join(w.file.Sync(), w.file.Close())
	w.file = nil
	w.out = io.Discard
	w.failed = errors.New("closed")
	return err
}

// Stats returns records written and write (and sync) failures since start.
func (w *Writer) Stats() (written, errs int64) { return w.written.Load(), w.writeErrors.Load() }
