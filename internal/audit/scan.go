package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
)

// The trail reader: a file is read in large chunks, each chunk's lines are
// hashed and their seq and prev read on every core, and the chain is then
// checked in order, one line at a time, by the caller (ScanTrail's visit).
// Each line's hash is independent of the others, which is what lets a
// trail be verified at the speed of the machine's SHA-256, not of one
// core's JSON decoding.

const (
	// chunkSize is how much of a file one batch holds: large enough for
	// any line (maxVerifyLine), small enough that the batches in flight
	// stay within a few tens of MB.
	chunkSize = 512 << 10
	// inFlight bounds the batches read ahead of the ordered check.
	inFlight = 4
)

// Line is one line of a trail as the reader's workers leave it: its bytes,
// its hash, and the seq and prev of its fixed prefix.
type Line struct {
	// Bytes is the line without its newline, valid until the visit
	// returns; Complete says it ended in a newline.
	Bytes    []byte
	Complete bool
	// Fast: Seq and Prev were read from the line's fixed prefix
	// ({"seq":N,"prev":"…",); otherwise the line must be decoded whole.
	Fast bool
	Seq  uint64
	Prev [sha256.Size]byte
	// HasPrev: prev was a hash ("" for a chain's first record).
	HasPrev bool
	// Checkpoint: the line is a checkpoint event (by its prefix).
	Checkpoint bool
	// Hash is the SHA-256 of Bytes, which the next line's prev names.
	Hash [sha256.Size]byte
}

// batch is a chunk of a file and its lines, filled by a worker, with what
// the caller's decode made of each.
type batch[T any] struct {
	buf   []byte
	lines []Line
	outs  []T
	done  chan struct{}
	err   error
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize+maxVerifyLine); return &b }}

// ScanTrail reads one file of a trail and calls visit with every line in
// order and its number (1-based), until visit returns an error or r ends.
// Lines are hashed, their prefixes read and decode (when not nil) run on
// every core, in parallel; visit runs on the calling goroutine, in order.
// It holds a few MB whatever the file's size.
func ScanTrail[T any](r io.Reader, decode func(l *Line, out *T), visit func(n int, l *Line, out *T) error) error {
	work := make(chan *batch[T], inFlight)
	order := make(chan *batch[T], inFlight)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				b.hash()
				if decode != nil && b.err == nil {
					b.outs = make([]T, len(b.lines))
					for i := range b.lines {
						decode(&b.lines[i], &b.outs[i])
					}
				}
				close(b.done)
			}
		}()
	}
	go func() {
		defer close(order)
		defer close(work)
		readChunks(r, stop, func(buf []byte, err error) bool {
			b := &batch[T]{buf: buf, err: err, done: make(chan struct{})}
			select {
			case order <- b:
			case <-stop:
				return false
			}
			if b.err == nil {
				work <- b
			} else {
				close(b.done)
			}
			return true
		})
	}()
	var err error
	n := 0
	for b := range order {
		<-b.done
		if err == nil {
			err = b.err
			var none T
			for i := range b.lines {
				if err != nil {
					break
				}
				n++
				out := &none
				if b.outs != nil {
					out = &b.outs[i]
				}
				err = visit(n, &b.lines[i], out)
			}
			if err != nil {
				close(stop)
			}
		}
		b.lines, b.outs = nil, nil
		if cap(b.buf) >= chunkSize {
			buf := b.buf[:0]
			chunkPool.Put(&buf)
		}
	}
	wg.Wait()
	return err
}

// readChunks reads r into chunks that end at a newline (the last one may
// hold a final line without one) and hands each on; a line longer than
// maxVerifyLine is an error batch.
func readChunks(r io.Reader, stop chan struct{}, send func(buf []byte, err error) bool) {
	var carry []byte
	for {
		bp := chunkPool.Get().(*[]byte)
		buf := append((*bp)[:0], carry...)
		n, err := io.ReadFull(r, buf[len(buf):len(buf)+chunkSize])
		buf = buf[:len(buf)+n]
		eof := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !eof {
			send(nil, err)
			return
		}
		end := len(buf)
		if !eof {
			end = bytes.LastIndexByte(buf, '\n') + 1
			if end == 0 && len(buf) > maxVerifyLine {
				send(nil, fmt.Errorf("line longer than %d bytes: not a record keybroker writes", maxVerifyLine))
				return
			}
		}
		carry = append(carry[:0], buf[end:]...)
		if end > 0 {
			if !send(buf[:end], nil) {
				return
			}
		} else {
			chunkPool.Put(bp)
		}
		if eof {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

// hash splits the batch into lines, and hashes and classifies each.
func (b *batch[T]) hash() {
	data := b.buf
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		l := Line{Complete: i >= 0}
		if i < 0 {
			l.Bytes, data = data, nil
		} else {
			l.Bytes, data = data[:i], data[i+1:]
		}
		if len(l.Bytes) > maxVerifyLine {
			b.err = fmt.Errorf("line longer than %d bytes: not a record keybroker writes", maxVerifyLine)
			return
		}
		l.Hash = sha256.Sum256(l.Bytes)
		if l.Complete {
			l.classify() // a final line without its newline may be torn: decoded whole
		}
		b.lines = append(b.lines, l)
	}
}

var (
	prefixSeq  = []byte(`{"seq":`)
	prefixPrev = []byte(`,"prev":"`)
	// A checkpoint is an event whose name comes first: recognised by that
	// prefix, never by a substring anywhere in the line.
	prefixEvent      = []byte(`,"type":"event","time":"`)
	prefixCheckpoint = []byte(`,"event":{"name":"` + EventCheckpoint + `"`)
)

// classify reads the fixed prefix every line the writer makes starts with,
// {"seq":N,"prev":"<64 hex or empty>", and whether it is a checkpoint;
// anything else is left for a full decode (Fast false).
func (l *Line) classify() {
	rest, ok := bytes.CutPrefix(l.Bytes, prefixSeq)
	if !ok {
		return
	}
	d := 0
	for d < len(rest) && d < 20 && '0' <= rest[d] && rest[d] <= '9' {
		d++
	}
	if d == 0 || (rest[0] == '0') {
		return
	}
	seq, err := strconv.ParseUint(string(rest[:d]), 10, 64)
	if err != nil {
		return
	}
	rest, ok = bytes.CutPrefix(rest[d:], prefixPrev)
	if !ok {
		return
	}
	switch {
	case len(rest) > 0 && rest[0] == '"':
		rest = rest[1:]
	case len(rest) > 2*sha256.Size && rest[2*sha256.Size] == '"':
		if _, err := hex.Decode(l.Prev[:], rest[:2*sha256.Size]); err != nil || !lowerHex(rest[:2*sha256.Size]) {
			return
		}
		l.HasPrev = true
		rest = rest[2*sha256.Size+1:]
	default:
		return
	}
	if len(rest) == 0 || rest[0] != ',' {
		return
	}
	l.Seq, l.Fast = seq, true
	if ev, ok := bytes.CutPrefix(rest, prefixEvent); ok {
		if i := bytes.IndexByte(ev, '"'); i >= 0 && i < 40 && bytes.HasPrefix(ev[i+1:], prefixCheckpoint) {
			l.Checkpoint = true
		}
	}
}

// lowerHex: the writer writes hashes in lower-case hex, and the chain
// compares them as text; upper case is not the same line.
func lowerHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9') && !('a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
