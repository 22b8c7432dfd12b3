package audit

import (
	"strconv"
	"unicode/utf8"
)

// Field bounds, in bytes. A caller controls the path, the query, the
// method and (through them) the error text; every record is cut to these
// sizes before it is written, so one request can never write more than a
// few KiB of audit whatever it sends, and every line stays far below what
// the readers (Verify, the chain's restart) accept.
const (
	MaxPath = 1024
	// MaxQuery is the longest query keybroker forwards (a longer one is
	// refused with 400), so that the audit always records a query whole.
	// Its record is bounded at four times that: redaction can lengthen a
	// query (k=x becomes k=REDACTED), never past that.
	MaxQuery = 8 << 10
	// MaxRefusedQuery bounds the query recorded for a request refused for
	// its form (a query too long, with a ';'): it never left.
	MaxRefusedQuery = 1024
	MaxError        = 512
	MaxDetail       = 1024
	maxName         = 128 // request id, caller, upstream, credential ref, event names
	maxShort        = 64  // remote address, method, outcome, policy and other enums
)

// MaxLine is the longest line the writer can produce: every bounded field
// at its bound and each byte escaped by encoding/json as \u00XX. Readers
// accept at least this much.
const MaxLine = 256 << 10

// Bound returns s cut to at most n bytes at a character boundary, with a
// marker that gives its length when it was cut.
func Bound(s string, n int) string { return bound(s, n) }

// bound returns s cut to at most n bytes at a character boundary, with
// invalid UTF-8 replaced (so encoding/json does not expand it), and a
// marker with the original length when it was cut.
func bound(s string, n int) string {
	if len(s) <= n && utf8.ValidString(s) {
		return s
	}
	orig := len(s)
	if !utf8.ValidString(s) {
		s = toValidUTF8(s)
	}
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…[truncated from " + strconv.Itoa(orig) + " bytes]"
}

func toValidUTF8(s string) string {
	b := make([]byte, 0, len(s))
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && size <= 1 {
			b = append(b, "\uFFFD"...)
		} else {
			b = append(b, s[:size]...)
		}
		s = s[size:]
	}
	return string(b)
}

// Bound cuts every field of a call record to its bound (see MaxPath and
// the others). Writer.Write calls it; it is exported for tests.
func (r *Record) Bound() {
	r.RequestID = bound(r.RequestID, maxName)
	r.Caller = bound(r.Caller, maxName)
	r.CallerAuth = bound(r.CallerAuth, maxShort)
	r.Subject = bound(r.Subject, 512)
	r.RemoteAddr = bound(r.RemoteAddr, maxShort)
	r.Method = bound(r.Method, maxShort)
	r.Upstream = bound(r.Upstream, maxName)
	r.Path = bound(r.Path, MaxPath)
	r.Query = bound(r.Query, 4*MaxQuery)
	r.Operation = bound(r.Operation, maxName)
	r.Tier = bound(r.Tier, maxShort)
	r.Outcome = bound(r.Outcome, maxShort)
	r.Policy = bound(r.Policy, maxShort)
	r.RateLimitedBy = bound(r.RateLimitedBy, maxShort)
	r.Error = bound(r.Error, MaxError)
	if c := r.Credential; c != nil {
		c.Source = bound(c.Source, maxShort)
		c.Ref = bound(c.Ref, maxName)
	}
}

func (e *Event) bound() {
	e.Name = bound(e.Name, maxName)
	e.Upstream = bound(e.Upstream, maxName)
	e.Source = bound(e.Source, maxShort)
	e.Ref = bound(e.Ref, maxName)
	e.RemoteAddr = bound(e.RemoteAddr, maxShort)
	e.Caller = bound(e.Caller, maxName)
	e.RequestID = bound(e.RequestID, maxName)
	e.Method = bound(e.Method, maxShort)
	e.Path = bound(e.Path, MaxPath)
	e.Operation = bound(e.Operation, maxName)
	e.Tier = bound(e.Tier, maxShort)
	e.Begun = bound(e.Begun, maxShort)
	e.Outcome = bound(e.Outcome, maxShort)
	e.Detail = bound(e.Detail, MaxDetail)
	e.Replica = bound(e.Replica, maxName)
	for i := range e.Paths {
		e.Paths[i].Path = bound(e.Paths[i].Path, MaxPath)
	}
	if len(e.Paths) > 5 {
		e.Paths = e.Paths[:5]
	}
	if len(e.Outcomes) > 16 {
		e.Outcomes = nil // only refusal codes are counted: never this many
	}
}
