// Package audit owns the audit trail: the record written for every call and
// every lifecycle event, the append-only writer that links each record to
// the one before it by SHA-256 (seq, prev), signed checkpoints, and the
// verification of the chain. It never sees a secret: records are built
// from names, versions and redacted queries by the proxy. Reading a trail
// for an auditor's report is package audit/report's.
package audit

import (
	"net/url"
	"strings"
	"time"

	"github.com/keybroker/keybroker/internal/rawquery"
	"github.com/keybroker/keybroker/internal/tokenshape"
)

// Record types.
const (
	TypeCall  = "call"
	TypeEvent = "event"
	// TypeBegin marks the line written before a call leaves for the
	// vendor (Writer.Begin).
	TypeBegin = "begin"
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
	// Subject is a JWT caller's token subject (caller_auth jwt); never
	// the token.
	Subject    string `json:"subject,omitempty"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	Method     string `json:"method,omitempty"`
	Upstream   string `json:"upstream,omitempty"`
	Path       string `json:"path,omitempty"`
	Query      string `json:"query,omitempty"`
	// Operation and Tier are the vendor's documented operation the call
	// is and its risk tier (read, respond, admin), on an upstream with an
	// operation catalogue; empty for an undocumented call.
	Operation string `json:"operation,omitempty"`
	Tier      string `json:"tier,omitempty"`
	Status    int    `json:"status,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
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
	// BeginSeq is the seq of the call's begin line, written before it was
	// forwarded (Writer.Begin); 0 for a call that never left.
	BeginSeq uint64 `json:"begin_seq,omitempty"`
}

// PathCount is a path and how often it was refused.
type PathCount struct {
	Path  string `json:"path"`
	Count int64  `json:"count"`
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
	// recorded one by one (event unidentified_summary); Caller, Count,
	// Outcomes (by refusal code) and Paths (the most refused) those of a
	// known caller (event refusal_summary).
	RemoteAddr string `json:"remote_addr,omitempty"`
	Caller     string `json:"caller,omitempty"`
	// BeginSeq, RequestID, Method, Path, Operation, Tier and Begun name a
	// call whose begin line has no end record (event call_interrupted):
	// the vendor may have acted on it.
	BeginSeq  uint64           `json:"begin_seq,omitempty"`
	RequestID string           `json:"request_id,omitempty"`
	Method    string           `json:"method,omitempty"`
	Path      string           `json:"path,omitempty"`
	Operation string           `json:"operation,omitempty"`
	Tier      string           `json:"tier,omitempty"`
	Begun     string           `json:"begun,omitempty"`
	Count     int64            `json:"count,omitempty"`
	Outcomes  map[string]int64 `json:"outcomes,omitempty"`
	Paths     []PathCount      `json:"paths,omitempty"`
	// Validated is set on credential_rotated when the upstream has a
	// probe: whether the vendor accepted the new version before it served.
	Validated *bool `json:"validated,omitempty"`
	// Status is the vendor's answer to a credential probe
	// (credential_rejected, credential_unproven; absent: no answer).
	Status int `json:"status,omitempty"`
	// Outcome is a token request's (event token_issued): issued, or the
	// OAuth error it was refused with.
	Outcome string `json:"outcome,omitempty"`
	// Replica names the keybroker that wrote the file (audit_file_opened,
	// started; audit.replica).
	Replica string `json:"replica,omitempty"`
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

// RedactQuery returns raw as it was forwarded, byte for byte and in order,
// except: the value of a credential-like parameter (IsCredentialName, or
// one of the extra names) is REDACTED; so is a name or value shaped like
// a bearer credential (a JWT, a keybroker token or caller key: package
// tokenshape), escaped or not, whatever its name; a value that itself holds
// credential-like name=value pairs (a client that appended
// "?access_token=..." to a query that already had one) has those
// redacted; and a name or value in which a string of secrets (the keys a
// caller presented) appears, escaped or not, is REDACTED. Pairs are split
// as forwarding splits them (package rawquery), so the audit sees the
// parameters the vendor sees.
func RedactQuery(raw string, extra []string, secrets []string) string {
	return rawquery.Map(raw, func(name, value, pair string) string {
		k, v, hasValue := strings.Cut(pair, "=")
		if Scrub(name, secrets) != name || Scrub(k, secrets) != k || tokenshape.FindEscaped(k) != tokenshape.None {
			k = "REDACTED"
		}
		switch {
		case !hasValue:
			return k
		case IsCredentialName(name) || rawquery.HasName(extra, name) || tokenshape.FindEscaped(v) != tokenshape.None:
			v = "REDACTED"
		case redactNested(value) != value:
			v = url.QueryEscape(Scrub(redactNested(value), secrets))
		case Scrub(value, secrets) != value || Scrub(v, secrets) != v:
			v = "REDACTED"
		}
		if Scrub(v, secrets) != v {
			v = "REDACTED"
		}
		return k + "=" + v
	})
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
