package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTimeoutNote_DNSFailureDoesNotNameTheResolver: the caller learns the
// vendor's name did not resolve, not the internal resolver's address.
func TestTimeoutNote_DNSFailureDoesNotNameTheResolver(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.huntress.io", Server: "10.255.255.53:53", IsNotFound: true}},
			"the DNS lookup of api.huntress.io failed"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "i/o timeout", Name: "api.huntress.io", Server: "10.255.255.53:53", IsTimeout: true}},
			"the DNS lookup of api.huntress.io timed out"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, "connection refused"},
	} {
		if got := timeoutNote(tc.err, "egress.dial_timeout", 10*time.Second); got != tc.want {
			t.Errorf("note %q, want %q", got, tc.want)
		}
	}
}

func TestAddr_DefaultPortsAndSettingsDefaults(t *testing.T) {
	for raw, want := range map[string]string{"https://api.huntress.io": "api.huntress.io:443", "http://127.0.0.1": "127.0.0.1:80",
		"https://[::1]:8443/x": "[::1]:8443"} {
		u, _ := url.Parse(raw)
		if got := Addr(u); got != want {
			t.Errorf("Addr(%s) = %s, want %s", raw, got, want)
		}
	}
	s := Settings{ConnectTimeout: time.Second}.WithDefaults()
	if s.DialTimeout != DefaultPhaseTimeout || s.ConnectTimeout != time.Second || s.TLSHandshakeTimeout != DefaultPhaseTimeout || s.IdleTimeout != DefaultIdleTimeout {
		t.Errorf("defaults: %+v", s)
	}
}

// TestConnect_ReasonPhraseIsNotRepeated: an egress proxy that refuses the
// tunnel with a reason phrase of its own (here one echoing a secret) is
// named by its status number only, in the caller's message and in the
// error the log gets; over raw TCP, as a proxy answers.
func TestConnect_ReasonPhraseIsNotRepeated(t *testing.T) {
	const planted = "PLANTED_proxy_secret_4e1d"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		_, _ = c.Write([]byte("HTTP/1.1 407 Denied for " + planted + "\r\nContent-Length: 0\r\n\r\n"))
	}()
	proxy, _ := url.Parse("http://" + ln.Addr().String())
	target, _ := url.Parse("https://vendor.example")
	d := NewDialer("huntress", target, Settings{Proxy: proxy})
	_, err = d.Dial(context.Background(), "tcp", "vendor.example:443")
	var eg *Error
	if !errors.As(err, &eg) || eg.Phase != PhaseConnect {
		t.Fatalf("error %v; want a CONNECT-phase error", err)
	}
	for what, s := range map[string]string{"message": eg.Msg, "log text": Describe(err)} {
		if strings.Contains(s, planted) || strings.Contains(s, "Denied") {
			t.Errorf("%s repeats the proxy's reason phrase: %s", what, s)
		}
	}
	if !strings.Contains(eg.Msg, ": 407") {
		t.Errorf("message %q does not name the status", eg.Msg)
	}
}

// TestDescribe_NeverRepeatsTheReply: what the log gets of a failed
// exchange is keybroker's and Go's fixed words.
func TestDescribe_NeverRepeatsTheReply(t *testing.T) {
	const planted = "PLANTED_vendor_text_77"
	cases := []struct {
		err  error
		want string
	}{
		{errors.New(`http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug="` + planted + `"`), "GOAWAY"},
		{errors.New(`net/http: HTTP/1.x transport connection broken: malformed HTTP status code "` + planted + `"`), "malformed reply"},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), "closed before the reply ended"},
		{tls.AlertError(42), "TLS alert: tls: bad certificate"},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, "connection reset by peer"},
		{errors.New(planted), "transport error (*errors.errorString)"},
	}
	for _, tc := range cases {
		got := Describe(tc.err)
		if strings.Contains(got, planted) || !strings.Contains(got, tc.want) {
			t.Errorf("Describe(%v) = %q; want %q and no vendor text", tc.err, got, tc.want)
		}
	}
}
