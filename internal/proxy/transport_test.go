package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
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
	ca, err := vendortest.NewCA("keybroker test vendor CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Leaf([]string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := ca.WriteFile(caFile); err != nil {
		t.Fatal(err)
	}
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
