package audit

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends rec as JSON, the same object encoding/json makes of
// it (field order, omitempty, escaping), without reflection or garbage:
// it is on every call's path.
func appendRecord(b []byte, r *Record) []byte {
	b = appendRequest(b, r, r.Seq, r.Prev, r.Type)
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	b = appendField(b, "outcome", r.Outcome)
	b = appendField(b, "policy", r.Policy)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, r.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, r.BytesOut, 10)
	b = append(b, `,"duration_ms":`...)
	b = appendFloat(b, r.DurationMS)
	b = append(b, `,"upstream_ms":`...)
	b = appendFloat(b, r.UpstreamMS)
	b = append(b, `,"ratelimit_wait_ms":`...)
	b = appendFloat(b, r.RateLimitWaitMS)
	b = appendField(b, "ratelimited_by", r.RateLimitedBy)
	b = appendCredential(b, r.Credential)
	b = append(b, `,"retried":`...)
	b = strconv.AppendBool(b, r.Retried)
	b = append(b, `,"error":`...)
	b = appendString(b, r.Error)
	if r.BeginSeq != 0 {
		b = append(b, `,"begin_seq":`...)
		b = strconv.AppendUint(b, r.BeginSeq, 10)
	}
	return append(b, '}')
}

// appendBegin appends the begin line of rec (Writer.Begin): the chain
// links, then the call's identity, request, credential and policy, in
// that order; no result fields.
func appendBegin(b []byte, r *Record, seq uint64, prev string) []byte {
	b = appendRequest(b, r, seq, prev, TypeBegin)
	b = appendCredential(b, r.Credential)
	b = appendField(b, "policy", r.Policy)
	return append(b, '}')
}

// appendRequest opens a line with the chain links, its type and time, and
// the call's identity and request: what a call record and its begin line
// share, in the same order.
func appendRequest(b []byte, r *Record, seq uint64, prev, typ string) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"prev":`...)
	b = appendString(b, prev)
	b = append(b, `,"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"time":"`...)
	b = time.Time(r.Time).UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, '"')
	b = appendField(b, "request_id", r.RequestID)
	b = appendField(b, "caller", r.Caller)
	b = appendField(b, "caller_auth", r.CallerAuth)
	b = appendField(b, "subject", r.Subject)
	b = appendField(b, "remote_addr", r.RemoteAddr)
	b = appendField(b, "method", r.Method)
	b = appendField(b, "upstream", r.Upstream)
	b = appendField(b, "path", r.Path)
	b = appendField(b, "query", r.Query)
	b = appendField(b, "operation", r.Operation)
	return appendField(b, "tier", r.Tier)
}

// appendCredential appends ,"credential":{...} unless c is nil.
func appendCredential(b []byte, c *CredentialRef) []byte {
	if c == nil {
		return b
	}
	b = append(b, `,"credential":{"source":`...)
	b = appendString(b, c.Source)
	b = append(b, `,"ref":`...)
	b = appendString(b, c.Ref)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(c.Version), 10)
	return append(b, '}')
}

// appendField appends ,"name":"value" unless value is empty (omitempty).
func appendField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

// appendFloat formats as encoding/json does.
func appendFloat(b []byte, f float64) []byte {
	abs := f
	if abs < 0 {
		abs = -abs
	}
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string with encoding/json's escaping:
// quotes, backslashes and control characters, <, > and & (HTML-safe),
// U+2028 and U+2029, and invalid UTF-8 as U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
