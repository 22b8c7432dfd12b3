package proxy

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/secrets"
)

// call is one request's state, from begin (which gives it its request id)
// to the audit record. It travels in the request context so that the ReverseProxy hooks
// (Rewrite, ModifyResponse, ErrorHandler) can reach it.
type call struct {
	id    string
	start time.Time
	rec   audit.Record

	in   *http.Request // the caller's request (its Host and TLS shape links)
	name string        // the upstream asked for: the first path segment
	rest string        // the path below the upstream, clean, as forwarded
	// query is the caller's query as forwarded: without the drop-in
	// slots' parameters (the injected credential is added after).
	query string
	cred  secrets.Credential
	// presented is what the request carries where a caller proof can sit
	// (read once, in route); keys backs its Keys.
	presented callers.Presented
	keys      [8]string

	// body holds a small request body so it can be replayed after a vendor
	// 401; replayable is false when the body was too large to hold.
	body       []byte
	replayable bool
	bytesIn    atomic.Int64

	// hasBody: the request came with a body; bodyDone: all of it was read;
	// bodyTimedOut: it did not arrive within read_body_timeout.
	// bodyDeadline sets that deadline, and lifts it once the body is in.
	hasBody      bool
	bodyDone     atomic.Bool
	bodyTimedOut atomic.Bool
	bodyDeadline *http.ResponseController

	// unrecorded: the call gets no call record. A refusal over its
	// refusal budget is counted in a summary event instead; a request to
	// the token endpoint is written as the event token_issued.
	unrecorded bool

	// code is the contract code keybroker answered with ("" if none).
	code string

	// ticket is the call's hold on its upstream quota slot; sent says the
	// request went to the vendor.
	ticket ratelimit.Ticket
	sent   bool
	// quota is the upstream limiter's answer under rate_limit.shares (its
	// RateLimit-* go on the reply); nil otherwise.
	quota *ratelimit.Result

	sentAt    time.Time // when the request went to the vendor
	reached   bool      // the vendor answered
	completed bool      // the handler returned normally
}

type callKey struct{}

func withCall(ctx context.Context, c *call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// requestID returns the caller's X-Request-Id when it is sane (1 to 128 of
// A-Z a-z 0-9 . _ - : and no more than one), else a new one: 32 hex digits,
// a random per-process prefix and a scrambled counter (multiplied by an odd
// constant and masked: a bijection, so unique, without telling callers how
// many calls came before), with no random read per call.
func (p *Proxy) requestID(r *http.Request) string {
	if vs := r.Header.Values("X-Request-Id"); len(vs) == 1 && saneID(vs[0]) {
		return vs[0]
	}
	var b [16]byte
	copy(b[:8], p.idPrefix[:])
	binary.BigEndian.PutUint64(b[8:], p.idCounter.Add(1)*0x9e3779b97f4a7c15^binary.BigEndian.Uint64(p.idPrefix[:]))
	return hex.EncodeToString(b[:])
}

func saneID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '-' || c == '_' || c == '.' || c == ':' ||
			('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// recorder notes the status and size of the reply the caller gets.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush lets streamed vendor replies through as they come.
func (w *recorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request bytes read from the caller, lifts the
// body's read deadline once it has all come, and notes a timeout.
type countingBody struct {
	io.ReadCloser
	c *call
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.bytesIn.Add(int64(n))
	switch {
	case err == io.EOF:
		b.c.bodyDone.Store(true)
		if b.c.bodyDeadline != nil {
			_ = b.c.bodyDeadline.SetReadDeadline(time.Time{})
		}
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			b.c.bodyTimedOut.Store(true)
		}
	}
	return n, err
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
