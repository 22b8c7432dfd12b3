package proxy

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Error codes of the HTTP contract (DESIGN.md). Every error keybroker makes,
// as opposed to one the vendor made, is written by fail from this one table,
// so every reply is consistent.
const (
	CodeBadRequest            = "bad_request"
	CodeCallerUnauthenticated = "caller_unauthenticated"
	CodeCallerForbidden       = "caller_forbidden"
	CodeUnknownUpstream       = "unknown_upstream"
	CodeBodyTooLarge          = "body_too_large"
	CodeRateLimited           = "rate_limited"
	CodeUpstreamUnreachable   = "upstream_unreachable"
	CodeCredentialUnavailable = "credential_unavailable"
	CodeAuditUnavailable      = "audit_unavailable"
	CodeUpstreamTimeout       = "upstream_timeout"
	// CodeIdentityUnavailable: a JWT caller's issuer keys cannot be had.
	CodeIdentityUnavailable = "identity_unavailable"
	// CodeInternal is not in DESIGN.md's table: a bug (a recovered panic).
	CodeInternal = "internal_error"
)

// ErrorHeader names the header that marks keybroker's own errors.
const ErrorHeader = "Keybroker-Error"

var errorStatus = map[string]int{
	CodeBadRequest:            http.StatusBadRequest,
	CodeCallerUnauthenticated: http.StatusUnauthorized,
	CodeCallerForbidden:       http.StatusForbidden,
	CodeUnknownUpstream:       http.StatusNotFound,
	CodeBodyTooLarge:          http.StatusRequestEntityTooLarge,
	CodeRateLimited:           http.StatusTooManyRequests,
	CodeUpstreamUnreachable:   http.StatusBadGateway,
	CodeCredentialUnavailable: http.StatusServiceUnavailable,
	CodeAuditUnavailable:      http.StatusServiceUnavailable,
	CodeUpstreamTimeout:       http.StatusGatewayTimeout,
	CodeIdentityUnavailable:   http.StatusServiceUnavailable,
	CodeInternal:              http.StatusInternalServerError,
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// fail writes keybroker's error reply and notes it in the call's record.
// message is for the caller: it names paths, fields and rules, never a
// value, and never which callers exist.
func fail(w http.ResponseWriter, c *call, code, message string) {
	status := errorStatus[code]
	c.code = code
	c.rec.Error = code + ": " + message
	h := w.Header()
	for k := range h {
		if k != "X-Request-Id" && k != "Retry-After" && !isRateLimitHeader(k) {
			delete(h, k) // a half-copied vendor reply leaves nothing behind
		}
	}
	h.Set(ErrorHeader, code)
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="keybroker"`)
	}
	if c.hasBody && !c.bodyDone.Load() {
		// The body was not read and will not be: close the connection.
		// net/http would otherwise try to read up to 256 KiB of it after
		// the reply, holding the connection for a body that may never
		// come; an expired read deadline makes it give up at once.
		h.Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	// Messages name the way to send a key ("<key>"): written as they read,
	// not HTML-escaped (the reply is JSON, served nosniff).
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(errorBody{Error: errorDetail{Code: code, Message: message, RequestID: c.id}})
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // Encode ends the line
}

func isRateLimitHeader(k string) bool {
	return k == "Ratelimit-Limit" || k == "Ratelimit-Remaining" || k == "Ratelimit-Reset" || k == "Ratelimit-Policy"
}

// setRetryHeaders writes Retry-After and the RateLimit-* headers (IETF
// draft) in whole seconds, rounded up, Retry-After at least 1.
func setRetryHeaders(h http.Header, retryAfter, reset time.Duration, limit, remaining int) {
	h.Set("Retry-After", strconv.Itoa(max(1, ceilSeconds(retryAfter))))
	if limit > 0 {
		h.Set("RateLimit-Limit", strconv.Itoa(limit))
		h.Set("RateLimit-Remaining", strconv.Itoa(remaining))
		h.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(max(reset, retryAfter))))
	}
}

func ceilSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}
