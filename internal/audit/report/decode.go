package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/keybroker/keybroker/internal/audit"
)

// The report's line decoder: the fields a report reads, taken from a line
// with jsontext's tokenizer rather than by reflection, on the reader's
// workers; values of few distinct strings (callers, upstreams, outcomes)
// are shared rather than allocated per line. An event is rare and decoded
// whole.

// decoder is one worker's decoding state.
type decoder struct {
	dec    *jsontext.Decoder
	br     bytes.Reader
	intern map[string]string
}

// maxInterned bounds the strings a decoder shares.
const maxInterned = 4096

var decoders = sync.Pool{New: func() any {
	d := &decoder{intern: map[string]string{}}
	d.dec = jsontext.NewDecoder(&d.br)
	return d
}}

var errNotRecord = errors.New("not an audit record")

// decodeLine reads raw into l, and l.at from its time.
func decodeLine(raw []byte, l *line) error {
	d := decoders.Get().(*decoder)
	defer decoders.Put(d)
	d.br.Reset(raw)
	d.dec.Reset(&d.br)
	if err := d.object(l); err != nil {
		return err
	}
	at, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return errors.New("record time " + strconv.Quote(l.Time) + ": " + err.Error())
	}
	l.at = at
	return nil
}

func (d *decoder) object(l *line) error {
	if t, err := d.dec.ReadToken(); err != nil || t.Kind() != '{' {
		return errNotRecord
	}
	for d.dec.PeekKind() == '"' {
		k, err := d.dec.ReadValue()
		if err != nil {
			return errNotRecord
		}
		f := fieldOf(k) // k is valid only until the next read
		switch f {
		case fEvent:
			v, err := d.dec.ReadValue()
			if err != nil {
				return errNotRecord
			}
			var ev audit.Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return errNotRecord
			}
			l.Event = &ev
			continue
		case fCredential:
			if err := d.credential(l); err != nil {
				return err
			}
			continue
		}
		v, err := d.dec.ReadValue()
		if err != nil {
			return errNotRecord
		}
		switch f {
		case fSeq:
			l.Seq, _ = strconv.ParseUint(string(v), 10, 64)
		case fPrev:
			l.Prev = d.str(v, false)
		case fType:
			l.Type = d.str(v, true)
		case fTime:
			l.Time = d.str(v, false)
		case fRequestID:
			l.RequestID = d.str(v, false)
		case fMethod:
			l.Method = d.str(v, true)
		case fOperation:
			l.Operation = d.str(v, true)
		case fTier:
			l.Tier = d.str(v, true)
		case fBeginSeq:
			l.BeginSeq, _ = strconv.ParseUint(string(v), 10, 64)
		case fCaller:
			l.Caller = d.str(v, true)
		case fCallerAuth:
			l.CallerAuth = d.str(v, true)
		case fUpstream:
			l.Upstream = d.str(v, true)
		case fPath:
			l.Path = d.str(v, false)
		case fStatus:
			n, _ := strconv.Atoi(string(v))
			l.Status = n
		case fOutcome:
			l.Outcome = d.str(v, true)
		case fPolicy:
			l.Policy = d.str(v, true)
		case fRateLimitedBy:
			l.RateLimitedBy = d.str(v, true)
		case fWait:
			l.RateLimitWaitMS, _ = strconv.ParseFloat(string(v), 64)
		}
	}
	if t, err := d.dec.ReadToken(); err != nil || t.Kind() != '}' {
		return errNotRecord
	}
	return nil
}

// The fields a report reads.
const (
	fOther = iota
	fSeq
	fPrev
	fType
	fTime
	fRequestID
	fMethod
	fOperation
	fTier
	fBeginSeq
	fCaller
	fCallerAuth
	fUpstream
	fPath
	fStatus
	fOutcome
	fPolicy
	fRateLimitedBy
	fWait
	fCredential
	fEvent
)

// fieldOf names a key (quoted, as read); no allocation.
func fieldOf(k []byte) int {
	switch string(k) {
	case `"seq"`:
		return fSeq
	case `"prev"`:
		return fPrev
	case `"type"`:
		return fType
	case `"time"`:
		return fTime
	case `"request_id"`:
		return fRequestID
	case `"method"`:
		return fMethod
	case `"operation"`:
		return fOperation
	case `"tier"`:
		return fTier
	case `"begin_seq"`:
		return fBeginSeq
	case `"caller"`:
		return fCaller
	case `"caller_auth"`:
		return fCallerAuth
	case `"upstream"`:
		return fUpstream
	case `"path"`:
		return fPath
	case `"status"`:
		return fStatus
	case `"outcome"`:
		return fOutcome
	case `"policy"`:
		return fPolicy
	case `"ratelimited_by"`:
		return fRateLimitedBy
	case `"ratelimit_wait_ms"`:
		return fWait
	case `"credential"`:
		return fCredential
	case `"event"`:
		return fEvent
	}
	return fOther
}

// credential reads the credential object's version.
func (d *decoder) credential(l *line) error {
	if d.dec.PeekKind() == 'n' {
		_, err := d.dec.ReadValue()
		return err
	}
	if t, err := d.dec.ReadToken(); err != nil || t.Kind() != '{' {
		return errNotRecord
	}
	c := &audit.CredentialRef{}
	for d.dec.PeekKind() == '"' {
		k, err := d.dec.ReadValue()
		if err != nil {
			return errNotRecord
		}
		version := string(k) == `"version"` // k is valid only until the next read
		v, err := d.dec.ReadValue()
		if err != nil {
			return errNotRecord
		}
		if version {
			c.Version, _ = strconv.Atoi(string(v))
		}
	}
	if t, err := d.dec.ReadToken(); err != nil || t.Kind() != '}' {
		return errNotRecord
	}
	l.Credential = c
	return nil
}

// str unquotes a JSON string value; shared is for values of few distinct
// strings, which are kept once per decoder.
func (d *decoder) str(v jsontext.Value, shared bool) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	raw := v[1 : len(v)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		u, err := jsontext.AppendUnquote(nil, v)
		if err != nil {
			return ""
		}
		return string(u)
	}
	if !shared {
		return string(raw)
	}
	if s, ok := d.intern[string(raw)]; ok {
		return s
	}
	s := string(raw)
	if len(d.intern) < maxInterned {
		d.intern[s] = s
	}
	return s
}
