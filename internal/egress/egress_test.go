package egress

import (
	"errors"
	"net"
	"net/url"
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
