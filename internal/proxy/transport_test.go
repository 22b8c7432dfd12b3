package proxy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawVendor is a Huntress stand-in that writes its replies by hand over
// verified TLS (HTTP/1.1, a test CA that keybroker trusts through
// egress.ca_file), so that a test can make it stall or stream below what
// an http.Handler allows. It checks the Basic credential exactly as
// Huntress does (401 otherwise) and records every request and connection.
type rawVendor struct {
	ln    net.Listener
	caPEM string // the CA file keybroker must trust
	reply func(n int, req *http.Request, c net.Conn) (keep bool)
	mu    sync.Mutex
	reqs  []string // paths in arrival order
	conns int
	open  []net.Conn
	wg    sync.WaitGroup
}

func newRawVendor(t *testing.T, reply func(n int, req *http.Request, c net.Conn) bool) *rawVendor {
	t.Helper()
	leaf, caFile := vendorLeaf(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(tcp, &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"http/1.1"}})
	v := &rawVendor{ln: ln, reply: reply, caPEM: caFile}
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

// URL is the vendor's https URL (host localhost, as its certificate says).
func (v *rawVendor) URL() string {
	return "https://localhost:" + strconv.Itoa(v.ln.Addr().(*net.TCPAddr).Port)
}

// harness is keybroker in front of the vendor, trusting its CA.
func (v *rawVendor) harness(t *testing.T, huntressYAML string) *harness {
	return newHarness(t, harnessOpts{huntressURL: v.URL(), huntressYAML: huntressYAML,
		topYAML: fmt.Sprintf("egress: {ca_file: %q}\n", v.caPEM)})
}

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

// A caller that goes away while the reply streams stops the vendor call:
// the vendor's connection is closed, not left to deliver the rest.
func TestTransport_CallerGoneClosesTheVendorConnection(t *testing.T) {
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
	h := v.harness(t, "")
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

// A vendor silent past the upstream's timeout gets the caller a 504, and
// its late reply is never handed to the next call.
func TestTransport_VendorSilentPastTheTimeoutIs504(t *testing.T) {
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
		if n == 1 {
			time.Sleep(1500 * time.Millisecond)
		}
		answer(c, req)
		return true
	})
	h := v.harness(t, "    timeout: 1s\n")
	resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey))
	contractError(t, resp, body, http.StatusGatewayTimeout, "upstream_timeout")
	// The late reply comes while the next call is on its way.
	time.Sleep(700 * time.Millisecond)

	resp, body = h.do("GET", "/huntress/v1/agents/2", nil, bearer(soarKey))
	if resp.StatusCode != 200 || body != `{"path":"/v1/agents/2"}` {
		t.Fatalf("next call: %d %s", resp.StatusCode, body)
	}
	if paths, conns := v.seen(); len(paths) != 2 || conns != 2 {
		t.Errorf("the vendor saw %v on %d connections; want both calls, the timed-out connection not reused", paths, conns)
	}
}

// A vendor may close a kept-alive connection at any time without saying
// so. The next call must still succeed, on a new connection, and the
// vendor must see each request once.
func TestTransport_ConnectionTheVendorClosedIsNotUsed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(c net.Conn)
	}{
		{"close", func(c net.Conn) { c.Close() }},
		{"reset", func(c net.Conn) { tcpOf(c).SetLinger(0); c.Close() }},
		{"half-close", func(c net.Conn) { tcpOf(c).CloseWrite() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
				answer(c, req)
				tc.close(c)
				return false
			})
			h := v.harness(t, "")
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
func TestTransport_UnsolicitedRepliesNeverReachTheNextCaller(t *testing.T) {
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
			h := v.harness(t, "")
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

// A reply head over Go's transport's 10 MiB bound is a 502, not memory.
func TestTransport_OversizedReplyHeadIsRefused(t *testing.T) {
	v := newRawVendor(t, func(n int, req *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		filler := "X-Filler: " + strings.Repeat("f", 1000) + "\r\n"
		for i := 0; i < 11000; i++ { // 11 MB of headers: over Go's 10 MiB
			if _, err := io.WriteString(c, filler); err != nil {
				return false
			}
		}
		io.WriteString(c, "Content-Length: 0\r\n\r\n")
		return false
	})
	h := v.harness(t, "")
	resp, body := h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey))
	contractError(t, resp, body, http.StatusBadGateway, "upstream_unreachable")
}

// keybroker asks the vendor for gzip (Go's transport does) and decodes it,
// so that links in the reply can be rewritten; Huntress's replies
// therefore reach the caller plain, whatever it accepts.
func TestTransport_GzipIsAskedForAndDecoded(t *testing.T) {
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
	h := v.harness(t, "")
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

// tcpOf is the TCP connection under the vendor's TLS.
func tcpOf(c net.Conn) *net.TCPConn { return c.(*tls.Conn).NetConn().(*net.TCPConn) }

// TestTransport_TimeoutBoundsTheHeadersNotTheBody: upstreams[].timeout is
// the wait for the vendor's reply headers, over HTTP/1.1 and HTTP/2 alike.
// A vendor silent past it gets the caller a 504 at the timeout; a vendor
// that answers at once and then streams its body for longer than the
// timeout gets the caller the whole body.
func TestTransport_TimeoutBoundsTheHeadersNotTheBody(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(huntressKey+":"+huntressSecret))
	for _, https := range []bool{false, true} {
		vendor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != basic {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if r.URL.Path == "/v1/account" { // silent past the timeout
				select {
				case <-time.After(5 * time.Second):
				case <-r.Context().Done():
				}
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, `{"agents":[`)
			w.(http.Flusher).Flush()
			for i := range 6 { // 2.4 s of body after the headers
				time.Sleep(400 * time.Millisecond)
				fmt.Fprintf(w, `{"id":%d},`, i)
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, `{"id":6}]}`)
		}))
		opts := harnessOpts{huntressYAML: "    timeout: 1s\n"}
		startVendor(t, vendor, https, &opts)
		h := newHarness(t, opts)

		start := time.Now()
		resp, body := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
		contractError(t, resp, body, http.StatusGatewayTimeout, "upstream_timeout")
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("https=%v: the 504 came after %v, not at the 1s timeout", https, took)
		}
		if !strings.Contains(body, "did not answer within 1s") {
			t.Errorf("https=%v: body %s", https, body)
		}

		resp, body = h.do("GET", "/huntress/v1/agents", nil, bearer(soarKey))
		want := `{"agents":[{"id":0},{"id":1},{"id":2},{"id":3},{"id":4},{"id":5},{"id":6}]}`
		if resp.StatusCode != 200 || body != want {
			t.Errorf("https=%v: a body streamed past the timeout: status %d, body %q", https, resp.StatusCode, body)
		}
	}
}
