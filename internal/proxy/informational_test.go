package proxy_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
)

// TestProxy_InformationalRepliesNeverReachTheCaller: a vendor's 1xx
// replies (103 Early Hints, 102) come before its reply, and
// httputil.ReverseProxy would pass them straight to the caller without
// the reply guard. keybroker drops them, so a header that echoes the
// injected credential in a 1xx never reaches the caller; the reply itself
// arrives, guarded. Read over raw TCP, where a 1xx would be seen.
func TestProxy_InformationalRepliesNeverReachTheCaller(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte(huntressKey + ":" + huntressSecret))
	for _, https := range []bool{false, true} {
		vendor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Basic "+basic {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Header().Set("Link", "<https://cdn.example/x?sig="+huntressSecret+">; rel=preload")
			w.Header().Set("X-Echo", "Basic "+basic)
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			w.Header().Del("X-Echo")
			w.WriteHeader(http.StatusProcessing)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"account":{"id":1}}`)
		}))
		opts := harnessOpts{}
		startVendor(t, vendor, https, &opts)
		h := newHarness(t, opts)
		c, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /huntress/v1/account HTTP/1.1\r\nHost: kb\r\nProxy-Authorization: Bearer "+soarKey+"\r\nConnection: close\r\n\r\n")
		raw, _ := io.ReadAll(bufio.NewReader(c))
		c.Close()
		got := string(raw)
		if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.Contains(got, `{"account":{"id":1}}`) {
			t.Errorf("https=%v: the caller got:\n%s", https, got)
		}
		// A 1xx is a status line of its own: "HTTP/1.1 103 ..." (the
		// digits alone could sit in the random request id).
		for _, leak := range []string{"HTTP/1.1 103", "HTTP/1.1 102", "Early Hints", "102 Processing", huntressSecret, basic, "cdn.example"} {
			if strings.Contains(got, leak) {
				t.Errorf("https=%v: the caller's bytes hold %q:\n%s", https, leak, got)
			}
		}
	}
}

// startVendor starts vendor, over HTTPS with HTTP/2 (a certificate for
// localhost, trusted through egress.ca_file) or plain http, stops it when
// the test ends, and points opts's Huntress upstream at it.
func startVendor(t *testing.T, vendor *httptest.Server, https bool, opts *harnessOpts) {
	t.Helper()
	if https {
		ca := vendorCA(t, vendor)
		vendor.EnableHTTP2 = true
		vendor.StartTLS()
		opts.huntressURL = "https://localhost:" + portOf(vendor.Listener.Addr())
		opts.topYAML += "egress: {ca_file: \"" + ca + "\"}\n"
	} else {
		vendor.Start()
		opts.huntressURL = vendor.URL
	}
	t.Cleanup(vendor.Close)
}

// vendorCA gives vendor a certificate for localhost from a fresh test CA
// and returns the CA file for egress.ca_file.
func vendorCA(t *testing.T, vendor *httptest.Server) string {
	t.Helper()
	leaf, file := vendorLeaf(t)
	vendor.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}}
	return file
}

// vendorLeaf is a certificate for localhost from a fresh test CA, and the
// CA file that trusts it (for egress.ca_file).
func vendorLeaf(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	ca, err := vendortest.NewCA("keybroker test vendor CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Leaf([]string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := ca.WriteFile(file); err != nil {
		t.Fatal(err)
	}
	return leaf, file
}

func portOf(a net.Addr) string { return strconv.Itoa(a.(*net.TCPAddr).Port) }
