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

// Policy decisions, as written in a call record.
const (
	PolicyAllowed   = "allowed"
	PolicyDenied    = "denied"
	PolicyWouldDeny = "would_deny" // policy_mode: report
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
	// RemoteAddr and Count summarise refused requests that were not
	// recorded one by one (event unauthenticated_summary).
	RemoteAddr string `json:"remote_addr,omitempty"`
	Count      int64  `json:"count,omitempty"`
	// Checkpoint is set on the event "checkpoint".
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// Time is a time written in UTC with milliseconds, as in DESIGN.md.
type Time time.Time

// MarshalJSON writes 2006-01-02T15:04:05.000Z.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format("2006-01-02T15:04:05.000Z07:00") + `"`), nil
}

// credentialWords mark a query parameter as credential-like when its name
// contains one of them, whatever the case: access_token, refresh_token,
// id_token, client_secret, x-api-key, api-key, session_id, Signature, ...
var credentialWords = []string{"token", "key", "secret", "password", "passwd", "signature", "auth", "session", "credential"}

// credentialNames are short credential-like names no word above covers.
var credentialNames = map[string]bool{"sig": true, "pwd": true, "pass": true, "jwt": true}

// IsCredentialName reports whether a query parameter named name is written
// as REDACTED.
func IsCredentialName(name string) bool {
	n := strings.ToLower(name)
	if credentialNames[n] {
		return true
	}
	for _, w := range credentialWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// RedactQuery returns raw with the values of credential-like parameters
// (IsCredentialName), and of the extra names given, replaced by REDACTED.
// A value that itself holds name=value pairs (a client that appended
// "?access_token=..." to a query that already had one) has those redacted
// too. Every occurrence of a string in secrets (the keys a caller
// presented) is replaced, wherever it sits. Parameters are sorted for
// stable records; a query that does not parse is written as REDACTED.
func RedactQuery(raw string, extra []string, secrets []string) string {
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
		redact := IsCredentialName(k)
		for _, e := range extra {
			if strings.EqualFold(e, k) {
				redact = true
			}
		}
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(Scrub(k, secrets)))
			b.WriteByte('=')
			if redact {
				b.WriteString("REDACTED")
			} else {
				b.WriteString(url.QueryEscape(Scrub(redactNested(v), secrets)))
			}
		}
	}
	return b.String()
}

// redactNested redacts name=value pairs inside a value, split at ? & and ;.
func redactNested(v string) string {
	if !strings.Contains(v, "=") {
		return v
	}
	var b strings.Builder
	start := 0
	for i := 0; i <= len(v); i++ {
		if i < len(v) && v[i] != '?' && v[i] != '&' && v[i] != ';' {
			continue
		}
		piece := v[start:i]
		if name, _, ok := strings.Cut(piece, "="); ok && IsCredentialName(name) {
			piece = name + "=REDACTED"
		}
		b.WriteString(piece)
		if i < len(v) {
			b.WriteByte(v[i])
		}
		start = i + 1
	}
	return b.String()
}

// Scrub replaces every occurrence of each secret in s by REDACTED. Secrets
// shorter than 6 bytes are ignored: no real key is that short, and
// scrubbing them would mangle ordinary text.
func Scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 6 && strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "REDACTED")
		}
	}
	return s
}
