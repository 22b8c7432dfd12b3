package proxy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawVendor is a Huntress stand-in on raw TCP, so that a test can make it
// misbehave below HTTP: close a kept-alive connection without a word,
// send bytes nobody asked for, huge heads, 1xx replies. It checks the
// Basic credential exactly as Huntress does (401 otherwise) and records
// every request and connection.
type rawVendor struct {
	ln    net.Listener
	reply func(n int, req *http.Request, c net.Conn) (keep bool)
	mu    sync.Mutex
	reqs  []string // paths in arrival order
	conns int
	open  []net.Conn
	wg    sync.WaitGroup
	// gone hears when keybroker closed a connection (the vendor's read
	// ended), if set.
	gone chan time.Time
}

func newRawVendor(t *testing.T, reply func(n int, req *http.Request, c net.Conn) bool) *rawVendor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	v := &rawVendor{ln: ln, reply: reply}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(huntressKey+":"+huntressSecret))
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			v.mu.Lock()
			v.conns++
			v.open = append(v.open, c)
			v.mu.Unlock()
			v.wg.Add(1)
			go func() {
				defer v.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						if v.gone != nil {
							select {
							case v.gone <- time.Now():
							default:
							}
						}
						return
					}
					v.mu.Lock()
					v.reqs = append(v.reqs, req.URL.Path)
					n := len(v.reqs)
					v.mu.Unlock()
					if req.Header.Get("Authorization") != want {
						fmt.Fprintf(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
						continue
					}
					if !v.reply(n, req, c) {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		v.mu.Lock()
		for _, c := range v.open {
			c.Close() // keybroker's pooled connections too
		}
		v.mu.Unlock()
		v.wg.Wait()
	})
	return v
}

func (v *rawVendor) URL() string { return "http://" + v.ln.Addr().String() }

func (v *rawVendor) seen() ([]string, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.reqs...), v.conns
}

// answer writes a JSON reply naming the path it answers.
func answer(c net.Conn, req *http.Request) {
	body := fmt.Sprintf(`{"path":%q}`, req.URL.Path)
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

func TestPool_SequentialCallsShareOneVendorConnection(t *testing.T) {
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool { answer(c, req); return true })
	h := newHarness(t, harnessOpts{huntressURL: v.URL()})
	for i := 0; i < 20; i++ {
		path := fmt.Sprintf("/v1/agents/%d", i)
		resp, body := h.do("GET", "/huntress"+path, nil, bearer(soarKey))
		if resp.StatusCode != 200 || body != fmt.Sprintf(`{"path":%q}`, path) {
			t.Fatalf("call %d: %d %s", i, resp.StatusCode, body)
		}
	}
	reqs, conns := v.seen()
	if len(reqs) != 20 || conns != 1 {
		t.Errorf("vendor saw %d requests on %d connections, want 20 on 1", len(reqs), conns)
	}
	if n := len(h.records()); n != 20 {
		t.Errorf("%d audit records, want 20", n)
	}
}

// A vendor may close a kept-alive connection at any time without saying
// so. The next call must still succeed, on a new connection, and the
// vendor must see each request once.
func TestPool_ConnectionTheVendorClosedIsNotUsed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(c net.Conn)
	}{
		{"close", func(c net.Conn) { c.Close() }},
		{"reset", func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }},
		{"half-close", func(c net.Conn) { c.(*net.TCPConn).CloseWrite() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
				answer(c, req)
				tc.close(c)
				return false
			})
			h := newHarness(t, harnessOpts{huntressURL: v.URL()})
			for i := 0; i < 10; i++ {
				if i%3 == 2 {
					time.Sleep(20 * time.Millisecond) // the close has surely arrived
				}
				path := fmt.Sprintf("/v1/agents/%d", i)
				resp, body := h.do("GET", "/huntress"+path, nil, bearer(soarKey))
				if resp.StatusCode != 200 || body != fmt.Sprintf(`{"path":%q}`, path) {
					t.Fatalf("call %d: %d %s", i, resp.StatusCode, body)
				}
			}
			reqs, conns := v.seen()
			if len(reqs) != 10 || conns != 10 {
				t.Errorf("vendor saw %d requests on %d connections, want 10 on 10: %v", len(reqs), conns, reqs)
			}
		})
	}
}

// Bytes a vendor sends that answer no request (a second reply, pipelined
// junk) must never be read as the reply to the next caller's request: that
// caller could be handed data its policy never allowed it to ask for.
func TestPool_UnsolicitedRepliesNeverReachTheNextCaller(t *testing.T) {
	smuggled := func(c net.Conn) {
		body := `{"path":"/v1/secret-of-another-caller"}`
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	for _, tc := range []struct {
		name  string
		after func(c net.Conn)
	}{
		{"in the same write", func(c net.Conn) {}},
		{"a moment later", func(c net.Conn) { time.Sleep(30 * time.Millisecond); smuggled(c) }},
		{"one byte later", func(c net.Conn) { time.Sleep(30 * time.Millisecond); c.Write([]byte("H")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			written := make(chan struct{}) // the unsolicited bytes are sent
			v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
				if n == 1 && tc.name == "in the same write" {
					defer close(written)
					var b bytes.Buffer
					body := fmt.Sprintf(`{"path":%q}`, req.URL.Path)
					fmt.Fprintf(&b, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					body = `{"path":"/v1/secret-of-another-caller"}`
					fmt.Fprintf(&b, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					c.Write(b.Bytes())
					return true
				}
				answer(c, req)
				if n == 1 {
					tc.after(c)
					close(written)
				}
				return true
			})
			h := newHarness(t, harnessOpts{huntressURL: v.URL()})
			resp, body := h.do("GET", "/huntress/v1/agents/1", nil, bearer(soarKey))
			if resp.StatusCode != 200 || !strings.Contains(body, "/v1/agents/1") {
				t.Fatalf("first call: %d %s", resp.StatusCode, body)
			}
			<-written
			time.Sleep(10 * time.Millisecond) // on loopback they are there at once
			resp, body = h.do("GET", "/huntress/v1/agents/2", nil, bearer(siemKey))
			if resp.StatusCode != 200 || body != `{"path":"/v1/agents/2"}` {
				t.Fatalf("second caller got %d %s, want its own reply", resp.StatusCode, body)
			}
			if _, conns := v.seen(); conns != 2 {
				t.Errorf("the connection with unsolicited bytes was used again (%d connections)", conns)
			}
		})
	}
}

func TestPool_OversizedReplyHeadIsRefused(t *testing.T) {
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		filler := "X-Filler: " + strings.Repeat("f", 1000) + "\r\n"
		for i := 0; i < 2000; i++ { // 2 MB of headers
			if _, err := io.WriteString(c, filler); err != nil {
				return false
			}
		}
		io.WriteString(c, "Content-Length: 0\r\n\r\n")
		return false
	})
	h := newHarness(t, harnessOpts{huntressURL: v.URL()})
	resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey))
	contractError(t, resp, body, http.StatusBadGateway, "upstream_unreachable")
}

func TestPool_InformationalRepliesComeBeforeTheReply(t *testing.T) {
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
		io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\n")
		answer(c, req)
		return true
	})
	h := newHarness(t, harnessOpts{huntressURL: v.URL()})
	for i := 0; i < 3; i++ {
		resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey))
		if resp.StatusCode != 200 || body != `{"path":"/v1/agents"}` {
			t.Fatalf("call %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if _, conns := v.seen(); conns != 1 {
		t.Errorf("%d connections, want 1", conns)
	}
}

// As Go's transport does: keybroker asks the vendor for gzip and decodes
// it, so that links in the reply can be rewritten; Huntress's replies
// therefore reach the caller plain, whatever it accepts.
func TestPool_GzipIsAskedForAndDecoded(t *testing.T) {
	plain := `{"agents":[{"id":1}],"pagination":{}}`
	var mu sync.Mutex
	var asked []string
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
		mu.Lock()
		asked = append(asked, req.Header.Get("Accept-Encoding"))
		mu.Unlock()
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		io.WriteString(zw, plain)
		zw.Close()
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", z.Len())
		c.Write(z.Bytes())
		return true
	})
	h := newHarness(t, harnessOpts{huntressURL: v.URL()})
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	for _, ae := range []string{"", "gzip", "br"} {
		req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/agents", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
		if ae != "" {
			req.Header.Set("Accept-Encoding", ae)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(raw) != plain || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("Accept-Encoding %q: %d %q (Content-Encoding %q)", ae, resp.StatusCode, raw, resp.Header.Get("Content-Encoding"))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(asked, ",") != "gzip,gzip,gzip" {
		t.Errorf("vendor was asked for %q", asked)
	}
	if _, conns := v.seen(); conns != 1 {
		t.Errorf("%d connections, want 1 (a decoded reply gives its connection back)", conns)
	}
}

// A caller that goes away while the reply streams stops the vendor call:
// the vendor's connection is closed, not left to deliver the rest into
// the pool.
func TestPool_CallerGoneClosesTheVendorConnection(t *testing.T) {
	closed := make(chan struct{})
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
		for i := 0; i < 500; i++ {
			if _, err := io.WriteString(c, "6\r\nchunk\n\r\n"); err != nil {
				close(closed)
				return false
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	})
	h := newHarness(t, harnessOpts{huntressURL: v.URL()})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/huntress/v1/stream", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-closed:
	case <-time.After(4 * time.Second):
		t.Fatal("the vendor kept streaming to keybroker after the caller went away")
	}
	waitFor(t, "the call's audit record", func() bool { return len(h.records()) == 1 })
	if rec := h.records()[0]; rec["outcome"] != "cancelled" {
		t.Errorf("outcome %v, want cancelled", rec["outcome"])
	}
}

func TestPool_VendorSilentPastTheTimeoutIs504(t *testing.T) {
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
		if n == 1 {
			time.Sleep(1500 * time.Millisecond)
		}
		answer(c, req)
		return true
	})
	h := newHarness(t, harnessOpts{huntressURL: v.URL(), huntressYAML: "    timeout: 1s\n"})
	resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey))
	contractError(t, resp, body, http.StatusGatewayTimeout, "upstream_timeout")
	// The late reply is not handed to the next call.
	time.Sleep(700 * time.Millisecond)

	resp, body = h.do("GET", "/huntress/v1/agents/2", nil, bearer(soarKey))
	if resp.StatusCode != 200 || body != `{"path":"/v1/agents/2"}` {
		t.Fatalf("next call: %d %s", resp.StatusCode, body)
	}
}

// An unused connection is closed after egress.idle_timeout, also when no
// further call comes to notice it.
func TestPool_IdleConnectionsAreClosedAfterIdleTimeout(t *testing.T) {
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool { answer(c, req); return true })
	v.gone = make(chan time.Time, 4)
	gone := v.gone
	h := newHarness(t, harnessOpts{huntressURL: v.URL(), topYAML: "egress: {idle_timeout: 300ms}\n"})
	start := time.Now()
	resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	select {
	case at := <-gone:
		if d := at.Sub(start); d < 300*time.Millisecond {
			t.Errorf("closed after %v, before the idle timeout", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the idle connection was still open 3s after a 300ms idle timeout")
	}
}

// Every way a reply can be framed keeps the pooled connection in step: the
// call after it gets its own reply (a reply read short or long would hand
// the next caller the wrong one).
func TestPool_ReplyFramingsKeepTheConnectionInStep(t *testing.T) {
	framings := []struct {
		name, method, reply, wantBody string
		wantStatus                    int
		closes                        bool // the framing ends the connection
	}{
		{"HEAD with a length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n", "", 200, false},
		{"204", "GET", "HTTP/1.1 204 No Content\r\n\r\n", "", 204, false},
		{"304", "GET", "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n", "", 304, false},
		{"chunked with a trailer", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n", "hello world", 200, false},
		{"length", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nabcde", "abcde", 200, false},
		{"until close", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end", "to the end", 200, true},
		{"connection close", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", "ok", 200, true},
		{"HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!", "old!", 200, true},
	}
	for _, f := range framings {
		t.Run(f.name, func(t *testing.T) {
			v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
				if req.URL.Path == "/v1/framed" {
					io.WriteString(c, f.reply)
					return !f.closes
				}
				answer(c, req)
				return true
			})
			h := newHarness(t, harnessOpts{huntressURL: v.URL()})
			for i := 0; i < 3; i++ {
				resp, body := h.do(f.method, "/huntress/v1/framed", nil, bearer(soarKey))
				if resp.StatusCode != f.wantStatus || body != f.wantBody {
					t.Fatalf("framed call %d: %d %q", i, resp.StatusCode, body)
				}
				path := fmt.Sprintf("/v1/agents/%d", i)
				resp, body = h.do("GET", "/huntress"+path, nil, bearer(siemKey))
				if resp.StatusCode != 200 || body != fmt.Sprintf(`{"path":%q}`, path) {
					t.Fatalf("call after it: %d %q", resp.StatusCode, body)
				}
			}
			want := 1
			if f.closes {
				want = 4 // each framed reply ends its connection; the next call opens one
			}
			if _, conns := v.seen(); conns != want {
				t.Errorf("%d vendor connections, want %d", conns, want)
			}
		})
	}
}
