package proxy

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// h1Pool sends requests over a pool of HTTP/1.1 connections on the
// calling goroutine: it writes the request, reads the reply's head and
// hands the body back, and the connection returns to the pool when the
// body has been read to its end. http.Transport runs a reader and a
// writer goroutine per connection and hands every request and reply
// between them; on the common call, a GET to a plain-http vendor, those
// hand-offs were a fifth of keybroker's latency.
//
// It serves only requests that can be sent again unchanged (no body; GET,
// HEAD or OPTIONS), because it writes the whole request before reading:
// a request with a body could meet a vendor that answers early and stops
// reading, which Go's transport, writing and reading at once, handles.
// A pooled connection is peeked at before each use (one non-blocking
// recv): one the vendor closed, or one holding bytes nobody asked for (a
// reply that must never reach the next caller), is closed instead. One
// that dies as the request goes out is replaced and the request sent once
// more, as http.Transport does for such requests.
type h1Pool struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	addr string
	// headerTimeout bounds the wait for the reply's head; idleTimeout how
	// long an unused connection is kept; maxIdle how many are kept.
	headerTimeout, idleTimeout time.Duration
	maxIdle                    int

	mu     sync.Mutex
	idle   []*h1Conn // most recently used last
	closed bool
	// sweep closes connections past idleTimeout while the pool is not
	// used (a pool in use expires them in get); armed while any idle.
	sweep *time.Timer
}

// maxReplyHead bounds a reply's status line and headers, like
// http.Transport's MaxResponseHeaderBytes.
const maxReplyHead = 1 << 20

type h1Conn struct {
	conn     net.Conn
	peek     *peeker
	lim      limitedReader
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
}

// limitedReader reads from the connection, at most n bytes while a reply
// head is being read.
type limitedReader struct {
	r io.Reader
	n int64
}

var errReplyHeadTooLarge = fmt.Errorf("vendor reply head over %d bytes", maxReplyHead)

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errReplyHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// noLimit is the limit while a body is read.
const noLimit = 1<<63 - 1

// h1Eligible says whether req can take the pool: no body, and a method
// that may be sent twice.
func h1Eligible(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// RoundTrip sends req and returns the vendor's reply; its Body gives the
// connection back when read to the end (or closes it when closed early).
func (t *h1Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// Like http.Transport: ask for gzip when the caller named no encoding
	// and decompress the reply, so links in it can be read.
	gzipped := false
	if req.Header.Get("Accept-Encoding") == "" && req.Header.Get("Range") == "" && req.Method != http.MethodHead {
		gzipped = true
		req.Header.Set("Accept-Encoding", "gzip")
		defer req.Header.Del("Accept-Encoding")
	}
	for attempt := 0; ; attempt++ {
		pc, reused, err := t.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := t.send(ctx, pc, req)
		if err == nil {
			if gzipped && resp.Body != http.NoBody && strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
				resp.Body = &gunzipBody{body: resp.Body}
				resp.Header.Del("Content-Encoding")
				resp.Header.Del("Content-Length")
				resp.ContentLength = -1
				resp.Uncompressed = true
			}
			return resp, nil
		}
		pc.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// A pooled connection the vendor closed meanwhile: once more on a
		// new one (the request has no body and may be sent twice).
		if !reused || attempt > 0 || !closedByPeer(err) {
			return nil, err
		}
	}
}

// send writes req on pc and reads the reply's head. The connection's
// deadline is cut short if ctx ends, so a caller that goes away stops the
// vendor call, also while the body streams.
func (t *h1Pool) send(ctx context.Context, pc *h1Conn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { _ = pc.conn.SetDeadline(time.Unix(1, 0)) })
	_ = pc.conn.SetReadDeadline(time.Now().Add(t.headerTimeout))
	if err := req.Write(pc.bw); err != nil {
		stop()
		return nil, err
	}
	if err := pc.bw.Flush(); err != nil {
		stop()
		return nil, err
	}
	pc.lim.n = maxReplyHead
	var resp *http.Response
	var err error
	for informational := 0; ; informational++ {
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			stop()
			return nil, err
		}
		// 1xx replies other than 101 come before the real one.
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if informational == 5 {
			stop()
			return nil, errors.New("vendor sent too many informational (1xx) replies")
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Nothing asked for it (upgrades are refused before forwarding).
		stop()
		return nil, errors.New("vendor switched protocols unasked (101)")
	}
	pc.lim.n = noLimit
	_ = pc.conn.SetReadDeadline(time.Time{})
	reuse := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		t.release(pc, stop, reuse)
		return resp, nil
	}
	resp.Body = &h1Body{body: resp.Body, pool: t, pc: pc, stop: stop, reuse: reuse}
	return resp, nil
}

// closedByPeer says err is what a pooled connection the vendor had closed
// gives: EOF before a reply, a reset or a broken pipe.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// get takes the most recently used live connection, or dials one.
func (t *h1Pool) get(ctx context.Context) (*h1Conn, bool, error) {
	now := time.Now()
	t.mu.Lock()
	t.expireLocked(now)
	for len(t.idle) > 0 {
		pc := t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		t.mu.Unlock()
		// Every reuse peeks first: bytes that arrived on an idle
		// connection must never be read as the next caller's reply.
		if pc.peek.check() {
			return pc, true, nil
		}
		pc.conn.Close()
		t.mu.Lock()
	}
	t.mu.Unlock()
	c, err := t.dial(ctx, "tcp", t.addr)
	if err != nil {
		return nil, false, err
	}
	pc := &h1Conn{conn: c, lim: limitedReader{r: c, n: noLimit}, peek: newPeeker(c)}
	pc.br = bufio.NewReader(&pc.lim)
	pc.bw = bufio.NewWriter(c)
	return pc, false, nil
}

// expireLocked closes connections unused for idleTimeout (the oldest are
// first in the list).
func (t *h1Pool) expireLocked(now time.Time) {
	n := 0
	for n < len(t.idle) && now.Sub(t.idle[n].lastUsed) > t.idleTimeout {
		t.idle[n].conn.Close()
		n++
	}
	if n > 0 {
		t.idle = append(t.idle[:0], t.idle[n:]...)
	}
}

// release gives pc back to the pool once its reply was read, unless it
// cannot carry another request.
func (t *h1Pool) release(pc *h1Conn, stop func() bool, reuse bool) {
	// stop false: the caller went away and the deadline was cut.
	if !stop() || !reuse || pc.br.Buffered() > 0 {
		pc.conn.Close()
		return
	}
	pc.lastUsed = time.Now()
	t.mu.Lock()
	if t.closed || len(t.idle) >= t.maxIdle {
		t.mu.Unlock()
		pc.conn.Close()
		return
	}
	t.idle = append(t.idle, pc)
	if t.sweep == nil {
		t.sweep = time.AfterFunc(t.idleTimeout, t.sweepIdle)
	}
	t.mu.Unlock()
}

// sweepIdle closes the connections past idleTimeout, and comes back while
// any are left.
func (t *h1Pool) sweepIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(time.Now())
	if len(t.idle) == 0 || t.closed {
		t.sweep = nil
		return
	}
	t.sweep.Reset(t.idleTimeout)
}

// CloseIdleConnections closes the pooled connections; with closed also
// every connection given back later (the pool was replaced).
func (t *h1Pool) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, pc := range idle {
		pc.conn.Close()
	}
}

// Close closes the pool: idle connections now, the others when given back.
func (t *h1Pool) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.CloseIdleConnections()
}

// h1Body is a reply body on a pooled connection.
type h1Body struct {
	body  io.ReadCloser
	pool  *h1Pool
	pc    *h1Conn
	stop  func() bool
	reuse bool
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.done = true
		b.pool.release(b.pc, b.stop, b.reuse)
	}
	return n, err
}

// Close before the end closes the connection: what is left of the reply
// would be read by the next request.
func (b *h1Body) Close() error {
	if !b.done {
		b.done = true
		b.stop()
		b.pc.conn.Close()
	}
	return nil
}

// gunzipBody decompresses a reply keybroker asked gzip for.
type gunzipBody struct {
	body io.ReadCloser
	zr   *gzip.Reader
	err  error
}

func (g *gunzipBody) Read(p []byte) (int, error) {
	if g.zr == nil && g.err == nil {
		g.zr, g.err = gzip.NewReader(g.body)
	}
	if g.err != nil {
		return 0, g.err
	}
	return g.zr.Read(p)
}

func (g *gunzipBody) Close() error { return g.body.Close() }
