package reply

import (
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// linkStream copies a JSON document (or a stream of them) from src byte
// for byte, except the string values found at one of the link paths: each
// is replaced by what fn returns for its decoded value, JSON-encoded, or
// by null when fn says no. Paths are matched on decoded object names (so
// "next\u005fpage_url" is next_page_url), array elements on the way are
// walked, and a name that repeats is treated at every occurrence. Memory
// is bounded by the decoder's look-ahead and the longest single token,
// whatever the document's size.
//
// A document that turns out not to be JSON makes Read fail: bytes already
// handed on cannot be taken back, so the caller's copy must be cut off,
// never completed with a link left as the vendor wrote it.
type linkStream struct {
	dec   *jsontext.Decoder
	src   *teeReader
	match func(ptr jsontext.Pointer) (field string, ok bool)
	fn    func(field, value string) (string, bool)
	// keys are the link paths' last names; levels, one per open object or
	// array, say whether it is an array and whether the object's last
	// name read is one of keys. Only a string under such a name has its
	// pointer built and matched: most values are passed by without a
	// single allocation.
	keys   []string
	levels []level

	out   []byte // ready to hand on, from outAt
	outAt int
	done  bool
	err   error
}

// teeReader keeps every byte the decoder reads, from the offset base on,
// so that the document's own bytes are what is handed on.
type teeReader struct {
	r     io.Reader
	buf   []byte // buf[start:] are the input bytes from base on
	start int
	base  int64
}

func (t *teeReader) Read(p []byte) (int, error) {
	if t.start > 0 && t.start >= len(t.buf)/2 {
		// What was taken is gone: move the rest to the front, so that the
		// buffer is reused rather than grown.
		t.buf = t.buf[:copy(t.buf, t.buf[t.start:])]
		t.start = 0
	}
	n, err := t.r.Read(p)
	t.buf = append(t.buf, p[:n]...)
	return n, err
}

// pending is what was read past base.
func (t *teeReader) pending() []byte { return t.buf[t.start:] }

// take returns the input bytes from base up to offset and drops them;
// they are valid until the next Read.
func (t *teeReader) take(offset int64) []byte {
	n := int(offset - t.base)
	b := t.buf[t.start : t.start+n]
	t.start += n
	t.base = offset
	return b
}

// chunk is how much output linkStream gathers before handing it on.
const chunk = 32 << 10

type level struct{ array, key bool }

func newLinkStream(src io.Reader, paths [][]string, fn func(field, value string) (string, bool)) *linkStream {
	t := &teeReader{r: src}
	s := &linkStream{
		src:   t,
		dec:   jsontext.NewDecoder(t, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)),
		match: pathMatcher(paths),
		fn:    fn,
	}
	for _, p := range paths {
		s.keys = append(s.keys, p[len(p)-1])
	}
	return s
}

// isKey reports whether a raw (quoted) object name decodes to one of the
// link keys; it allocates only for a name with escapes.
func (s *linkStream) isKey(raw []byte) bool {
	name := raw[1 : len(raw)-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		u, _ := jsontext.AppendUnquote(nil, raw)
		name = u
	}
	for _, k := range s.keys {
		if string(name) == k {
			return true
		}
	}
	return false
}

// underKey reports whether the value about to be read sits under a link
// key: in an object, that key's value; in arrays, an element of (arrays
// of) that key's value.
func (s *linkStream) underKey() bool {
	for i := len(s.levels) - 1; i >= 0; i-- {
		if !s.levels[i].array {
			return s.levels[i].key
		}
	}
	return false
}

// pathMatcher reports whether a JSON Pointer names a link, and which (the
// dotted path): its object names, array indexes left out, are one of the
// paths.
func pathMatcher(paths [][]string) func(jsontext.Pointer) (string, bool) {
	return func(ptr jsontext.Pointer) (string, bool) {
		for _, p := range paths {
			i, ok := 0, true
			for tok := range ptr.Tokens() {
				if isIndex(tok) {
					continue
				}
				if i >= len(p) || tok != p[i] {
					ok = false
					break
				}
				i++
			}
			if ok && i == len(p) {
				return strings.Join(p, "."), true
			}
		}
		return "", false
	}
}

// isIndex reports whether a pointer token is an array index. An object
// name made of digits is taken for one too: a link path never has one.
func isIndex(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return false
		}
	}
	return true
}

func (s *linkStream) Read(p []byte) (int, error) {
	for s.outAt == len(s.out) {
		s.out, s.outAt = s.out[:0], 0
		if s.err != nil {
			return 0, s.err
		}
		if s.done {
			return 0, io.EOF
		}
		s.step()
	}
	n := copy(p, s.out[s.outAt:])
	s.outAt += n
	return n, nil
}

// step decodes tokens until a chunk of output is ready, the input ends, or
// it is found not to be JSON.
func (s *linkStream) step() {
	for len(s.out) < chunk {
		kind := s.dec.PeekKind()
		if kind == 0 {
			_, err := s.dec.ReadToken() // the error PeekKind saw
			if errors.Is(err, io.EOF) {
				s.out = append(s.out, s.src.pending()...) // trailing white space
				s.src.start = len(s.src.buf)
				s.done = true
			} else {
				s.err = errNotJSON{err}
			}
			return
		}
		switch kind {
		case '{', '[', '}', ']':
			if _, err := s.dec.ReadToken(); err != nil {
				s.err = errNotJSON{err}
				return
			}
			if kind == '{' || kind == '[' {
				s.levels = append(s.levels, level{array: kind == '['})
			} else if len(s.levels) > 0 {
				s.levels = s.levels[:len(s.levels)-1]
			}
			s.out = append(s.out, s.src.take(s.dec.InputOffset())...)
			continue
		}
		name := kind == '"' && !s.atValue()
		candidate := kind == '"' && !name && s.underKey()
		v, err := s.dec.ReadValue()
		if err != nil {
			s.err = errNotJSON{err}
			return
		}
		end := s.dec.InputOffset()
		if name && len(s.levels) > 0 {
			s.levels[len(s.levels)-1].key = s.isKey(v)
		}
		field, ok := "", false
		if candidate {
			field, ok = s.match(s.dec.StackPointer())
		}
		if !ok {
			s.out = append(s.out, s.src.take(end)...)
			continue
		}
		raw := s.src.take(end)
		s.out = append(s.out, raw[:len(raw)-len(v)]...)
		// Invalid UTF-8 (allowed, as most decoders allow it) comes back
		// replaced by U+FFFD, with an error that is of no concern here:
		// the value is judged as a link either way.
		str, _ := jsontext.AppendUnquote(nil, v)
		if nv, ok := s.fn(field, string(str)); ok {
			s.out, _ = jsontext.AppendQuote(s.out, nv)
		} else {
			s.out = append(s.out, "null"...)
		}
	}
}

// atValue reports whether the next token is a value in an object (not a
// name), where a link field's value sits; array elements are values too.
func (s *linkStream) atValue() bool {
	depth := s.dec.StackDepth()
	if depth == 0 {
		return false
	}
	kind, n := s.dec.StackIndex(depth)
	return kind == '[' || n%2 == 1
}

// errNotJSON is a reply that turned out not to be JSON.
type errNotJSON struct{ err error }

func (e errNotJSON) Error() string { return "reply is not JSON: " + e.err.Error() }
func (e errNotJSON) Unwrap() error { return e.err }

// rewriteAll runs the stream over a document held in memory. ok is false
// when it is not JSON (the caller then passes it on as it came).
func rewriteAll(doc []byte, paths [][]string, fn func(field, value string) (string, bool)) (out []byte, ok bool) {
	var b bytes.Buffer
	b.Grow(len(doc) + 64)
	if _, err := io.Copy(&b, newLinkStream(bytes.NewReader(doc), paths, fn)); err != nil {
		return nil, false
	}
	return b.Bytes(), true
}

// startsLikeJSON reports whether the first byte that is not white space
// opens an object or an array: a document that could hold a link field.
func startsLikeJSON(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}
