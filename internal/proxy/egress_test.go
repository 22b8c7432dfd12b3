package proxy_test

import (
	"net"
	"strings"
	"testing"
)

// silent accepts connections and never says a word.
func silent(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return ln.Addr().String()
}

// TestEgress_TimeoutsNameTheirPhase: a stalled CONNECT and a stalled TLS
// handshake each end at their own timeout with a 504 that names it.
func TestEgress_TimeoutsNameTheirPhase(t *testing.T) {
	stalled := silent(t)
	cases := []struct {
		name, top, url, want string
	}{
		{"CONNECT", "egress: {proxy: \"http://" + stalled + "\", connect_timeout: 300ms}\n", "https://localhost:9",
			"the egress proxy " + stalled + " did not answer CONNECT (timed out: egress.connect_timeout 300ms)"},
		{"TLS handshake", "egress: {tls_handshake_timeout: 300ms}\n", "https://" + stalled,
			`the TLS handshake with upstream "huntress" timed out (egress.tls_handshake_timeout 300ms)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{topYAML: tc.top, huntressURL: tc.url})
			resp, body := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
			contractError(t, resp, body, 504, "upstream_timeout")
			if msg := mustJSON(t, body)["error"].(map[string]any)["message"]; msg != tc.want {
				t.Errorf("message %q, want %q", msg, tc.want)
			}
			if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); !strings.Contains(rec["error"].(string), "timed out") {
				t.Errorf("audit error %v", rec["error"])
			}
		})
	}
}

// TestEgress_PlainHTTPNeverUsesTheProxy: a loopback http upstream goes
// direct even with an egress proxy configured (here one that would stall).
func TestEgress_PlainHTTPNeverUsesTheProxy(t *testing.T) {
	stalled := silent(t)
	h := newHarness(t, harnessOpts{topYAML: "egress: {proxy: \"http://" + stalled + "\", connect_timeout: 300ms}\n"})
	if resp, body := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Fatalf("plain-http upstream with an egress proxy set: %d %s", resp.StatusCode, body)
	}
	if n := len(h.huntress.Requests()); n != 1 {
		t.Errorf("the vendor got %d requests", n)
	}
}
