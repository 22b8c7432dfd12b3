package reply

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// body rewrites the link fields the upstream names (rewrite_links) in a
// JSON reply, so that a client following pagination.next_page_url comes
// back through keybroker instead of sending its key to the vendor. Any
// reply is read as JSON if it parses as JSON, whatever its Content-Type,
// in whatever size: a small reply of known length is read whole (and only
// tokenized when it holds a link key's name or a \u escape), any other is
// rewritten as it streams, in bounded memory. A rewritten reply goes to
// the caller uncompressed. A reply in an encoding keybroker cannot read is
// an error (the caller gets 502): keybroker asks for gzip or identity
// only, so only a misbehaving vendor sends one.
func (g *Guard) body(resp *http.Response, c Call) error {
	if len(g.links) == 0 || resp.Body == nil || resp.Body == http.NoBody || c.Head {
		return nil
	}
	enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	switch enc {
	case "", "identity", "gzip", "x-gzip", "deflate":
	default:
		resp.Body.Close()
		return &EncodingError{Upstream: g.o.Upstream, Encoding: enc}
	}
	fn := func(field, value string) (string, bool) { return g.jsonLink(field, value, resp.Request.URL, c) }
	if n := resp.ContentLength; n >= 0 && n <= maxPooledBody && (enc == "" || enc == "identity") {
		g.small(resp, fn)
		return nil
	}
	g.stream(resp, enc, fn)
	return nil
}

// small handles an uncompressed reply of known length up to maxPooledBody:
// read into a pooled buffer (handed back when the caller's copy is
// closed), and rewritten in memory when it holds something to rewrite.
// One that is not JSON goes on as it came. (A compressed one streams: its
// size once decompressed is not known.)
func (g *Guard) small(resp *http.Response, fn func(field, value string) (string, bool)) {
	pb := g.bodies.Get().(*pooledBody)
	pb.reset(int(resp.ContentLength), &g.bodies)
	if _, err := io.ReadFull(resp.Body, pb.buf); err != nil {
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(pb.buf), resp.Body), resp.Body}
		return
	}
	resp.Body.Close()
	resp.Body = pb
	plain := pb.buf
	if !startsLikeJSON(plain) || (!containsAnyKey(plain, g.linkKeys) && !bytes.Contains(plain, []byte(`\u`))) {
		return
	}
	out, ok := rewriteAll(plain, g.links, fn)
	if !ok || bytes.Equal(out, plain) {
		return
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	h := resp.Header
	h.Set("Content-Length", strconv.Itoa(len(out)))
	uncompressed(resp)
}

// stream rewrites a reply of unknown or large size as it goes to the
// caller. Its length is not known in advance, so it goes without one.
func (g *Guard) stream(resp *http.Response, enc string, fn func(field, value string) (string, bool)) {
	body := resp.Body
	var r io.Reader = body
	switch enc {
	case "gzip", "x-gzip":
		r = &lazyReader{open: func() (io.Reader, error) { return gzip.NewReader(body) }}
	case "deflate":
		r = &lazyReader{open: func() (io.Reader, error) { return zlib.NewReader(body) }}
	}
	resp.Body = readCloser{&sniffReader{r: r, links: g.links, fn: fn}, body}
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	uncompressed(resp)
}

// uncompressed marks resp as the plain, changed body it now is.
func uncompressed(resp *http.Response) {
	h := resp.Header
	h.Del("Content-Encoding")
	h.Del("Transfer-Encoding")
	h.Del("Etag") // the body changed
	h.Del("Content-Md5")
	resp.TransferEncoding = nil
	resp.Uncompressed = true
}

// lazyReader opens its decompressor at the first Read, so that a vendor
// slow to send its body holds up the copy, not ModifyResponse.
type lazyReader struct {
	open func() (io.Reader, error)
	r    io.Reader
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.r == nil {
		r, err := l.open()
		if err != nil {
			return 0, err
		}
		l.r = r
	}
	return l.r.Read(p)
}

// sniffReader looks at a streamed reply's first bytes: one that opens an
// object or an array is rewritten as JSON (linkStream), anything else
// passes on as it is.
type sniffReader struct {
	r     io.Reader
	links [][]string
	fn    func(field, value string) (string, bool)
	out   io.Reader
}

func (s *sniffReader) Read(p []byte) (int, error) {
	if s.out == nil {
		br := bufio.NewReaderSize(s.r, 4<<10)
		for {
			b, err := br.Peek(br.Buffered() + 1)
			if rest := bytes.TrimLeft(b, " \t\r\n"); len(rest) > 0 || err != nil {
				if startsLikeJSON(rest) {
					s.out = newLinkStream(br, s.links, s.fn)
				} else {
					s.out = br
				}
				break
			}
		}
	}
	return s.out.Read(p)
}

// EncodingError is a reply in a content encoding keybroker cannot read,
// on an upstream whose replies it must read (rewrite_links).
type EncodingError struct {
	Upstream, Encoding string
}

func (e *EncodingError) Error() string {
	enc := e.Encoding
	if !knownEncodings[enc] {
		enc = "an unknown one" // the header is the vendor's text: not repeated
	}
	return "upstream " + strconv.Quote(e.Upstream) + " replied in an encoding keybroker cannot read (" + enc + ")"
}

// knownEncodings are the registered content codings keybroker does not
// read (IANA HTTP Content Coding Registry), named in an EncodingError.
var knownEncodings = map[string]bool{"br": true, "zstd": true, "compress": true, "x-compress": true, "aes128gcm": true,
	"exi": true, "pack200-gzip": true, "dcb": true, "dcz": true}

type readCloser struct {
	io.Reader
	io.Closer
}

// maxPooledBody is the largest reply read into a pooled buffer.
const maxPooledBody = 64 << 10

// pooledBody is a reply held in a pooled buffer; Close returns it.
type pooledBody struct {
	buf  []byte
	pos  int
	pool *sync.Pool
}

func (b *pooledBody) reset(n int, pool *sync.Pool) {
	if cap(b.buf) < n {
		b.buf = make([]byte, n)
	}
	b.buf, b.pos, b.pool = b.buf[:n], 0, pool
}

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.pos >= len(b.buf) {
		return 0, io.EOF
	}
	n := copy(p, b.buf[b.pos:])
	b.pos += n
	return n, nil
}

func (b *pooledBody) Close() error {
	if b.pool != nil {
		pool := b.pool
		b.pool = nil
		pool.Put(b)
	}
	return nil
}

// containsAnyKey reports whether doc holds any of the quoted keys.
func containsAnyKey(doc []byte, keys [][]byte) bool {
	for _, k := range keys {
		if bytes.Contains(doc, k) {
			return true
		}
	}
	return false
}
