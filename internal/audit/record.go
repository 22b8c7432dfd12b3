// Package audit owns the audit trail: the record written for every call and
// every lifecycle event, the append-only writer that links each record to
// the one before it by SHA-256 (seq, prev), and the verification of that
// chain. It never sees a secret: records are built from names, versions and
// redacted queries by the proxy.
package audit

import (
	"net/url"
	"sort"
	"strings"
	"time"
)

// Record types.
const (
	TypeCall  = "call"
	TypeEvent = "event"
)

// Outcomes of a call.
const (
	// OutcomeForwarded: the call reached the vendor, whatever it answered.
	OutcomeForwarded = "forwarded"
	// OutcomeRefused: keybroker refused it (400, 401, 403, 404, 413, 429).
	OutcomeRefused = "refused"
	// OutcomeFailed: keybroker could not complete it (502, 503, 504).
	OutcomeFailed = "failed"
	// OutcomeCancelled: the caller went away before the answer.
	OutcomeCancelled = "cancelled"
)

// Record is one line of the audit trail. Field order is the line's order.
type Record struct {
	Seq  uint64 `json:"seq"`
	Prev string `json:"prev"`
	Type string `json:"type"`
	Time Time   `json:"time"`

	RequestID  string `json:"request_id,omitempty"`
	Caller     string `json:"caller,omitempty"`
	CallerAuth string `json:"caller_auth,omitempty"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	Method     string `json:"method,omitempty"`
	Upstream   string `json:"upstream,omitempty"`
	Path       string `json:"path,omitempty"`
	Query      string `json:"query,omitempty"`
	Status     int    `json:"status,omitempty"`
	Outcome    string `json:"outcome,omitempty"`
	// Policy is "allowed", "denied", or "would_deny" (report mode).
	Policy          string         `json:"policy,omitempty"`
	BytesIn         int64          `json:"bytes_in"`
	BytesOut        int64          `json:"bytes_out"`
	DurationMS      float64        `json:"duration_ms"`
	UpstreamMS      float64        `json:"upstream_ms"`
	RateLimitWaitMS float64        `json:"ratelimit_wait_ms"`
	RateLimitedBy   string         `json:"ratelimited_by,omitempty"`
	Credential      *CredentialRef `json:"credential,omitempty"`
	Retried         bool           `json:"retried"`
	Error           string         `json:"error"`
}

// CredentialRef says which credential served a call: never its value.
type CredentialRef struct {
	Source  string `json:"source"`
	Ref     string `json:"ref"`
	Version int    `json:"version"`
}

// Event is a lifecycle event: credential loaded or rotated, Vault login,
// config reloaded, limiter fallback.
type Event struct {
	Name       string `json:"name"`
	Upstream   string `json:"upstream,omitempty"`
	Source     string `json:"source,omitempty"`
	Ref        string `json:"ref,omitempty"`
	Version    int    `json:"version,omitempty"`
	OldVersion int    `json:"old_version,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

// Time is a time written in UTC with milliseconds, as in DESIGN.md.
type Time time.Time

// MarshalJSON writes 2006-01-02T15:04:05.000Z.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format("2006-01-02T15:04:05.000Z07:00") + `"`), nil
}

// credentialParams are query parameters whose values are written as
// REDACTED: DESIGN.md's list and their common spellings.
var credentialParams = map[string]bool{
	"access_token": true, "token": true, "key": true, "secret": true,
	"password": true, "signature": true, "api_key": true, "apikey": true,
	"client_secret": true, "sig": true, "passwd": true, "auth": true,
}

// RedactQuery returns raw with the values of credential-like parameters,
// and of the extra names given, replaced by REDACTED. Parameter order is
// kept sorted for stable records.
func RedactQuery(raw string, extra ...string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "REDACTED" // unparseable: do not risk writing it
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		redact := credentialParams[strings.ToLower(k)]
		for _, e := range extra {
			if strings.EqualFold(e, k) {
				redact = true
			}
		}
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(k))
			b.WriteByte('=')
			if redact {
				b.WriteString("REDACTED")
			} else {
				b.WriteString(url.QueryEscape(v))
			}
		}
	}
	return b.String()
}
