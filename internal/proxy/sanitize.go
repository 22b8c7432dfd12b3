package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/tokenshape"
)

// checkForm refuses request forms a reverse proxy must never act on: CONNECT,
// absolute-form or authority-form targets ("GET http://other/..."), the
// asterisk form, protocol upgrades (a tunnel would carry calls that no
// policy or audit record sees), and requests with too many header fields.
func checkForm(r *http.Request, maxHeaderCount int) error {
	if r.Method == http.MethodConnect {
		return errors.New("CONNECT is not supported: keybroker forwards only to its configured upstreams")
	}
	if !strings.HasPrefix(r.RequestURI, "/") {
		return errors.New("request target must be a path (absolute-form is not accepted)")
	}
	if isUpgrade(r.Header) {
		return errors.New("protocol upgrades (Upgrade, h2c) are not supported: every call must pass policy and audit")
	}
	n := 0
	for _, v := range r.Header {
		n += len(v)
	}
	if n > maxHeaderCount {
		return errors.New("too many header fields")
	}
	for _, c := range r.URL.RawQuery {
		if c < 0x20 || c == 0x7f {
			return errors.New("control character in query")
		}
	}
	// A query is split on '&' only, as the audit and the reply guard split
	// it; frameworks disagree on ';' (a separator to some, a character to
	// others), so the policy and the audit could see other parameters than
	// the vendor does.
	if strings.IndexByte(r.URL.RawQuery, ';') >= 0 {
		return errors.New("';' in the query is refused: send parameters separated by '&' (escape a literal ';' as %3B)")
	}
	if len(r.URL.RawQuery) > audit.MaxQuery {
		return fmt.Errorf("query longer than %d bytes: the audit must record every query whole", audit.MaxQuery)
	}
	if k := tokenInQuery(r.URL.RawQuery); k != tokenshape.None {
		return fmt.Errorf("a %s in the query is refused: tokens are never accepted in a query, where they would be logged along the way; send it in Proxy-Authorization or Authorization", k)
	}
	return nil
}

// tokenInQuery finds a JWT or a keybroker token in any name or value of a
// raw query, escaped or not. A caller key (kbk_) is not refused: vendors'
// own clients send one in their slot parameter (Infocyte's
// ?access_token=), and the audit redacts it wherever else it sits.
func tokenInQuery(raw string) tokenshape.Kind {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		name, value, _ := strings.Cut(pair, "=")
		for _, part := range [2]string{name, value} {
			if k := tokenshape.FindEscaped(part); k == tokenshape.JWT || k == tokenshape.Token {
				return k
			}
		}
	}
	return tokenshape.None
}

// isUpgrade reports whether a request asks to switch protocols: any Upgrade
// or HTTP2-Settings header, or an "upgrade" token in Connection, whatever
// the case or spacing.
func isUpgrade(h http.Header) bool {
	if len(h["Upgrade"]) > 0 || len(h["Http2-Settings"]) > 0 {
		return true
	}
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// cleanPath checks the raw (still percent-encoded) request path and returns
// it decoded. It refuses, rather than normalises, anything that could make
// the path keybroker decides on differ from the path a vendor resolves:
// dot segments, empty segments (//), backslashes, control characters and
// NUL, percent-encoded slash, backslash, dot or control characters, and a
// semicolon in any form (Tomcat, Jetty and Spring read "..;" as "..", and
// neither vendor uses matrix parameters).
// A path it accepts is its own clean form, so the policy is decided on
// exactly the path forwarded.
func cleanPath(raw string) (string, error) {
	if !strings.HasPrefix(raw, "/") {
		return "", errors.New("path must start with /")
	}
	var b []byte // the decoded path, made only once a % is met
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if b == nil {
				b = append(make([]byte, 0, len(raw)), raw[:i]...)
			}
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", errors.New("malformed percent-encoding in path")
			}
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
			switch {
			case c == '/' || c == '\\':
				return "", errors.New("encoded slash or backslash in path")
			case c == '.':
				return "", errors.New("encoded dot in path")
			case c == ';':
				return "", errors.New("semicolon in path")
			case c < 0x20 || c == 0x7f:
				return "", errors.New("encoded control character in path")
			}
			b = append(b, c)
			continue
		}
		switch {
		case c == '\\':
			return "", errors.New("backslash in path")
		case c < 0x20 || c == 0x7f:
			return "", errors.New("control character in path")
		case c == '?' || c == '#':
			return "", errors.New("malformed path")
		case c == ';':
			return "", errors.New("semicolon in path")
		}
		if b != nil {
			b = append(b, c)
		}
	}
	p := raw
	if b != nil {
		p = string(b)
	}
	for rest := p[1:]; ; {
		seg, after, more := strings.Cut(rest, "/")
		switch {
		case seg == "." || seg == "..":
			return "", errors.New("dot segment in path")
		case seg == "" && more:
			return "", errors.New("empty segment (//) in path")
		}
		if !more {
			return p, nil
		}
		rest = after
	}
}

// splitUpstream splits /name/rest into name and /rest ("" for /name).
func splitUpstream(p string) (name, rest string) {
	p = strings.TrimPrefix(p, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i:]
	}
	return p, ""
}

// rawPath returns the request target's path, still percent-encoded.
func rawPath(r *http.Request) string {
	p, _, _ := strings.Cut(r.RequestURI, "?")
	return p
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
