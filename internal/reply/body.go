package reply

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// maxLinkRewrite bounds the JSON replies whose links are rewritten (after
// decompression). Larger replies, and replies that are not JSON, stream to
// the caller untouched.
const maxLinkRewrite = 8 << 20

// body rewrites the link fields the upstream names
// (rewrite_links) in a JSON reply, so that a client following
// pagination.next_page_url comes back through keybroker instead of sending
// its key to the vendor. The body is read into memory only when it is
// JSON, in an encoding keybroker can read (identity, gzip, deflate) and at
// most maxLinkRewrite long; a rewritten body is sent uncompressed with its
// Content-Length fixed up. Anything else is passed on byte for byte.
func (g *Guard) body(resp *http.Response, c Call) {
	if len(g.links) == 0 || resp.Body == nil || resp.Body == http.NoBody || !isJSON(resp.Header.Get("Content-Type")) ||
		resp.ContentLength > maxLinkRewrite || c.Head {
		return
	}
	enc := resp.Header.Get("Content-Encoding")
	if enc != "" {
		enc = strings.ToLower(strings.TrimSpace(enc))
	}
	if enc != "" && enc != "identity" && enc != "gzip" && enc != "x-gzip" && enc != "deflate" {
		g.o.Log.Warn("links not rewritten: reply in an encoding keybroker cannot read",
			zap.String("request_id", c.RequestID), zap.String("upstream", g.o.Upstream), zap.String("content_encoding", enc))
		return
	}
	var raw []byte
	if n := resp.ContentLength; n >= 0 && n <= maxPooledBody {
		// The common case, a small reply of known length: read into a
		// pooled buffer, handed back when the caller's copy is closed.
		pb := g.bodies.Get().(*pooledBody)
		pb.reset(int(n), &g.bodies)
		if _, err := io.ReadFull(resp.Body, pb.buf); err != nil {
			resp.Body = readCloser{io.MultiReader(bytes.NewReader(pb.buf), resp.Body), resp.Body}
			return
		}
		resp.Body.Close()
		resp.Body, raw = pb, pb.buf
	} else {
		var err error
		raw, err = io.ReadAll(io.LimitReader(resp.Body, maxLinkRewrite+1))
		if err != nil || len(raw) > maxLinkRewrite {
			// Too large, or broken: hand on what was read and the rest as is.
			resp.Body = readCloser{io.MultiReader(bytes.NewReader(raw), resp.Body), resp.Body}
			return
		}
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(raw))
	}

	plain, err := decode(raw, enc)
	if err != nil {
		return // not readable as its encoding says: pass it on as it came
	}
	if !containsAnyKey(plain, g.linkKeys) {
		return // no link field in it: nothing to rewrite
	}
	out, changed, err := rewriteJSONStrings(plain, g.links, func(s string) (string, bool) {
		return g.link(s, resp.Request.URL, c)
	})
	if err != nil || !changed {
		return
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	h := resp.Header
	h.Set("Content-Length", strconv.Itoa(len(out)))
	h.Del("Content-Encoding")
	h.Del("Transfer-Encoding")
	h.Del("Etag") // the body changed
	h.Del("Content-Md5")
	resp.TransferEncoding = nil
	resp.Uncompressed = true
}

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

// isJSON reports whether a Content-Type is JSON (application/json or any
// +json type), without parsing parameters: it runs on every reply.
func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	return strings.EqualFold(mt, "application/json") || (len(mt) > 5 && strings.EqualFold(mt[len(mt)-5:], "+json"))
}

func decode(raw []byte, enc string) ([]byte, error) {
	var r io.ReadCloser
	var err error
	switch enc {
	case "", "identity":
		return raw, nil
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(raw))
	case "deflate":
		r, err = zlib.NewReader(bytes.NewReader(raw))
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, maxLinkRewrite+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxLinkRewrite {
		return nil, errors.New("decompressed reply over the rewrite bound")
	}
	return out, nil
}

// rewriteJSONStrings replaces the string values found at any of paths
// (each a list of object keys; arrays on the way are walked) with what fn
// returns, editing the document in place so that every other byte stays as
// the vendor sent it. fn's ok false replaces the value with null. It
// reports whether anything changed. Callers look for the keys first
// (containsAnyKey): parsing is the slow part.
func rewriteJSONStrings(doc []byte, paths [][]string, fn func(string) (string, bool)) ([]byte, bool, error) {
	type frame struct {
		obj     bool
		wantKey bool
		key     string
	}
	type edit struct {
		start, end int
		val        []byte
	}
	var (
		stack []frame
		edits []edit
	)
	atPath := func() bool {
		for _, p := range paths {
			i := 0
			ok := true
			for _, f := range stack {
				if !f.obj {
					continue
				}
				if i >= len(p) || f.key != p[i] {
					ok = false
					break
				}
				i++
			}
			if ok && i == len(p) {
				return true
			}
		}
		return false
	}
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].obj {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	for {
		before := int(dec.InputOffset())
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, err
		}
		if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone()
				continue
			}
			stack[n-1].key, _ = tok.(string)
			stack[n-1].wantKey = false
			continue
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, frame{obj: true, wantKey: true})
			case '[':
				stack = append(stack, frame{})
			case ']':
				stack = stack[:len(stack)-1]
				valueDone()
			}
			continue
		case string:
			if atPath() {
				nv, ok := fn(t)
				if !ok || nv != t {
					start := before + bytes.IndexByte(doc[before:], '"')
					enc := []byte("null")
					if ok {
						enc = encodeString(nv)
					}
					edits = append(edits, edit{start: start, end: int(dec.InputOffset()), val: enc})
				}
			}
		}
		valueDone()
	}
	if len(edits) == 0 {
		return doc, false, nil
	}
	var b bytes.Buffer
	b.Grow(len(doc) + 64*len(edits))
	last := 0
	for _, e := range edits {
		b.Write(doc[last:e.start])
		b.Write(e.val)
		last = e.end
	}
	b.Write(doc[last:])
	return b.Bytes(), true, nil
}

func encodeString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
