// Package vendortest holds fake vendor APIs for keybroker's tests, faithful
// to ../shared/vendors/: they accept only the exact current credential the
// way the vendor checks it, enforce the vendor's rate limit, answer with the
// vendor's envelopes and errors, and record what they received so tests
// assert on it. A test fails if keybroker would be rejected or throttled by
// the real vendor. Imported only by tests.
package vendortest

import (
	"compress/gzip"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Received is one request as the fake vendor saw it.
type Received struct {
	Method string
	Path   string
	// EscapedPath is the path as it came on the wire.
	EscapedPath string
	RawQuery    string
	Header      http.Header
	// Proto is the protocol the request came over (HTTP/2.0, HTTP/1.1);
	// SNI the server name the client sent in its TLS hello.
	Proto, SNI string
	// Trailer holds the request trailers (read with the body).
	Trailer http.Header
	Body    []byte
	At      time.Time
	Status  int
}

// recorder is the shared request log of a fake.
type recorder struct {
	mu   sync.Mutex
	reqs []Received
}

func (r *recorder) add(req *http.Request, body []byte, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sni := ""
	if req.TLS != nil {
		sni = req.TLS.ServerName
	}
	r.reqs = append(r.reqs, Received{Proto: req.Proto, SNI: sni, Method: req.Method, Path: req.URL.Path, EscapedPath: req.URL.EscapedPath(), RawQuery: req.URL.RawQuery,
		Header: req.Header.Clone(), Trailer: req.Trailer.Clone(), Body: body, At: time.Now(), Status: status})
}

// Requests returns a copy of every request received so far.
func (r *recorder) Requests() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.reqs...)
}

// Count returns how many requests got status (0: all).
func (r *recorder) Count(status int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.reqs {
		if status == 0 || q.Status == status {
			n++
		}
	}
	return n
}

// Huntress fakes api.huntress.io: HTTP Basic with the exact current
// key:secret pair (401 {"error":"Unauthorized"} otherwise), a sliding
// window of Limit requests per Window per API key (429
// {"error":"Too Many Requests"}, no Retry-After, like the vendor), and the
// v1 envelopes with limit/page_token pagination.
type Huntress struct {
	recorder
	*httptest.Server

	mu     sync.Mutex
	key    string
	secret string
	// also are further pairs accepted (an overlap during a rotation);
	// down answers every call 503.
	also   [][2]string
	down   bool
	limit  int
	window time.Duration
	sent   map[string][]time.Time // accepted calls per key, for the window
	// retryAfter, when set, is sent with a 429 (the real vendor sends none).
	retryAfter string
	delay      time.Duration
	gzip       bool
	jitter     time.Duration
	received   func(*http.Request)
}

// HuntressOptions tune the fake. Zero values: 60 per 60 s, no delay.
type HuntressOptions struct {
	Limit  int
	Window time.Duration
	// RetryAfter is sent with 429s when not empty.
	RetryAfter string
	// Delay holds every answer this long (a slow vendor).
	Delay time.Duration
	// Gzip compresses replies for requests that accept gzip.
	Gzip bool
	// TLS, when set, serves HTTPS (HTTP/2 offered) with its certificate.
	TLS *tls.Config
	// CountJitter delays each call by a random 0..CountJitter before the
	// fake counts it in its window, as network delay does to a real
	// vendor's count.
	CountJitter time.Duration
	// Received, when set, is told of each request as it arrives, body
	// read, before Delay and before it is answered.
	Received func(r *http.Request)
}

// NewHuntress starts the fake on a loopback port; t.Cleanup should Close it.
func NewHuntress(key, secret string, o HuntressOptions) *Huntress {
	if o.Limit == 0 {
		o.Limit = 60
	}
	if o.Window == 0 {
		o.Window = time.Minute
	}
	h := &Huntress{key: key, secret: secret, limit: o.Limit, window: o.Window,
		sent: map[string][]time.Time{}, retryAfter: o.RetryAfter, delay: o.Delay, gzip: o.Gzip, jitter: o.CountJitter, received: o.Received}
	h.Server = httptest.NewUnstartedServer(http.HandlerFunc(h.serve))
	if o.TLS != nil {
		h.Server.TLS = o.TLS
		h.Server.EnableHTTP2 = true
		// Refused handshakes are what the tests are about, not news.
		h.Server.Config.ErrorLog = log.New(io.Discard, "", 0)
		h.Server.StartTLS()
	} else {
		h.Server.Start()
	}
	return h
}

// LocalhostURL is the fake's URL with the host name localhost (so that a
// TLS client sends SNI, which it does not for an IP address).
func (h *Huntress) LocalhostURL() string {
	return strings.Replace(h.URL, "127.0.0.1", "localhost", 1)
}

// SetCredential rotates the pair the fake accepts, at once.
func (h *Huntress) SetCredential(key, secret string) {
	h.mu.Lock()
	h.also = nil
	defer h.mu.Unlock()
	h.key, h.secret = key, secret
}

// AcceptAlso makes the fake accept these pairs too, besides the current
// one (until SetCredential): Huntress keeps an old pair working for a
// while after a new one is made.
func (h *Huntress) AcceptAlso(pairs ...[2]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.also = append(h.also, pairs...)
}

// SetDown makes the fake answer every call 503 (a vendor outage), or not.
func (h *Huntress) SetDown(down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = down
}

// MaxInWindow returns the most accepted calls seen in any window.
func (h *Huntress) MaxInWindow() int {
	reqs := h.Requests()
	best := 0
	for i := range reqs {
		if reqs[i].Status == http.StatusUnauthorized {
			continue
		}
		n := 0
		for j := i; j < len(reqs) && reqs[j].At.Sub(reqs[i].At) < h.window; j++ {
			if reqs[j].Status != http.StatusUnauthorized && reqs[j].Status != http.StatusTooManyRequests {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

func (h *Huntress) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if h.received != nil {
		h.received(r)
	}
	if h.gzip && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		gz := &gzipWriter{ResponseWriter: w, zw: gzip.NewWriter(w)}
		defer gz.zw.Close()
		w = gz
	}
	status := h.handle(w, r)
	h.add(r, body, status)
}

func (h *Huntress) handle(w http.ResponseWriter, r *http.Request) int {
	if h.delay > 0 {
		select {
		case <-time.After(h.delay):
		case <-r.Context().Done():
			return 0
		}
	}
	h.mu.Lock()
	down := h.down
	h.mu.Unlock()
	if down {
		return writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Service Unavailable"})
	}
	key, ok := h.authenticate(r)
	if !ok {
		return writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Unauthorized"})
	}
	if h.jitter > 0 {
		time.Sleep(rand.N(h.jitter))
	}
	if !h.admit(key) {
		if h.retryAfter != "" {
			w.Header().Set("Retry-After", h.retryAfter)
		}
		return writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "Too Many Requests"})
	}
	w.Header().Set("X-Request-Id", "huntress-req-1")

	path := strings.TrimSuffix(r.URL.Path, "/")
	if r.Method != http.MethodGet {
		return h.write(w, r.Method, path)
	}
	switch path {
	case "/v1/account":
		return writeJSON(w, http.StatusOK, map[string]any{"account": map[string]any{
			"id": 1, "name": "Acme", "subdomain": "acme", "status": "enabled"}})
	case "/v1/organizations":
		return h.list(w, r, "organizations", 25, func(i int) any {
			return map[string]any{"id": i, "name": fmt.Sprintf("Org %d", i), "account_id": 1, "agents_count": 3}
		})
	case "/v1/agents":
		return h.list(w, r, "agents", 42, func(i int) any {
			return map[string]any{"id": i, "hostname": fmt.Sprintf("host-%d", i), "account_id": 1, "organization_id": 1 + i%3, "os": "Windows"}
		})
	case "/v1/incident_reports":
		return h.list(w, r, "incident_reports", 7, func(i int) any {
			return map[string]any{"id": i, "severity": "high", "status": "sent", "subject": fmt.Sprintf("Incident %d", i), "agent_id": i}
		})
	}
	if id, ok := strings.CutPrefix(path, "/v1/agents/"); ok {
		n, err := strconv.Atoi(id)
		if err != nil || n < 1 || n > 42 {
			return writeJSON(w, http.StatusNotFound, map[string]string{"error": "Not Found"})
		}
		return writeJSON(w, http.StatusOK, map[string]any{"agent": map[string]any{"id": n, "hostname": fmt.Sprintf("host-%d", n)}})
	}
	return writeJSON(w, http.StatusNotFound, map[string]string{"error": "Not Found"})
}

// write answers the writes of the Huntress spec the tests make: the ES|QL
// query (a read sent as POST), isolation and its release, and agent
// update and uninstall, in both path forms (/v1/accounts/{account_id}/…).
func (h *Huntress) write(w http.ResponseWriter, method, path string) int {
	if rest, ok := strings.CutPrefix(path, "/v1/accounts/"); ok {
		if _, tail, ok := strings.Cut(rest, "/"); ok {
			path = "/v1/" + tail
		}
	}
	if method == http.MethodPost && path == "/v1/siem/query" {
		return writeJSON(w, http.StatusOK, map[string]any{"results": []any{}, "columns": []any{}})
	}
	if id, ok := strings.CutPrefix(path, "/v1/agents/"); ok {
		id, isolation := strings.CutSuffix(id, "/isolation")
		n, err := strconv.Atoi(id)
		switch {
		case err != nil || n < 1 || n > 42:
		case isolation && (method == http.MethodPost || method == http.MethodDelete):
			return writeJSON(w, http.StatusOK, map[string]any{"agent": map[string]any{"id": n, "isolated": method == http.MethodPost}})
		case !isolation && (method == http.MethodPatch || method == http.MethodDelete):
			return writeJSON(w, http.StatusOK, map[string]any{"agent": map[string]any{"id": n}})
		}
	}
	return writeJSON(w, http.StatusNotFound, map[string]string{"error": "Not Found"})
}

// authenticate checks Basic auth against the exact current pair, in
// constant time, and returns the API key.
func (h *Huntress) authenticate(r *http.Request) (string, bool) {
	auths := r.Header.Values("Authorization")
	if len(auths) != 1 || !strings.HasPrefix(auths[0], "Basic ") {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(auths[0], "Basic "))
	if err != nil {
		return "", false
	}
	key, secret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	k := subtle.ConstantTimeCompare([]byte(key), []byte(h.key))
	s := subtle.ConstantTimeCompare([]byte(secret), []byte(h.secret))
	ok = k&s == 1
	for _, p := range h.also {
		ok = ok || subtle.ConstantTimeCompare([]byte(key), []byte(p[0]))&subtle.ConstantTimeCompare([]byte(secret), []byte(p[1])) == 1
	}
	return key, ok
}

// admit applies the sliding window: at most limit accepted calls in any
// window of the configured length, per API key.
func (h *Huntress) admit(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	kept := h.sent[key][:0]
	for _, t := range h.sent[key] {
		if now.Sub(t) < h.window {
			kept = append(kept, t)
		}
	}
	if len(kept) >= h.limit {
		h.sent[key] = kept
		return false
	}
	h.sent[key] = append(kept, now)
	return true
}

// list serves a paginated collection: limit 1..500 (default 10, else 400),
// page_token an opaque offset, {"<plural>":[...],"pagination":{...}}.
func (h *Huntress) list(w http.ResponseWriter, r *http.Request, plural string, total int, item func(int) any) int {
	q := r.URL.Query()
	limit := 10
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return writeJSON(w, http.StatusBadRequest, map[string]string{"error": "limit does not have a valid value"})
		}
		limit = n
	}
	offset := 0
	if v := q.Get("page_token"); v != "" {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		n, err2 := strconv.Atoi(string(raw))
		if err != nil || err2 != nil || n < 0 {
			return writeJSON(w, http.StatusBadRequest, map[string]string{"error": "page_token is invalid"})
		}
		offset = n
	}
	items := []any{}
	for i := offset; i < total && i < offset+limit; i++ {
		items = append(items, item(i+1))
	}
	pag := map[string]any{"next_page_token": nil, "next_page_url": nil}
	if offset+limit < total {
		tok := base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(offset + limit)))
		pag["next_page_token"] = tok
		// An absolute URL on the vendor's own origin, as api.huntress.io
		// sends (https://api.huntress.io/v1/...).
		pag["next_page_url"] = fmt.Sprintf("%s%s?limit=%d&page_token=%s", origin(r), r.URL.Path, limit, tok)
	}
	return writeJSON(w, http.StatusOK, map[string]any{plural: items, "pagination": pag})
}

func writeJSON(w http.ResponseWriter, status int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
	return status
}

// origin is the scheme and host a request reached the fake on.
func origin(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// gzipWriter compresses a reply, as a vendor behind a CDN does.
type gzipWriter struct {
	http.ResponseWriter
	zw *gzip.Writer
}

func (g *gzipWriter) WriteHeader(code int) {
	g.Header().Set("Content-Encoding", "gzip")
	g.Header().Del("Content-Length")
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipWriter) Write(b []byte) (int, error) { return g.zw.Write(b) }
