package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"time"
)

// Report is what Check found about reaching one upstream.
type Report struct {
	// Via is "direct" or "egress proxy host:port".
	Via string
	// Protocol is h2 or http/1.1 over TLS, or "http" for plain http.
	Protocol string
	// Chain is the verified certificate chain, leaf first.
	Chain []*x509.Certificate
	// Took is the time to connect (and tunnel) and complete the handshake.
	Took time.Duration
}

// Check opens a connection the way calls do (through the egress proxy
// when one is set, TLS verified as for a call) and reports it. It sends
// no request: only the egress proxy's credential, on CONNECT.
func Check(ctx context.Context, d *Dialer) (Report, error) {
	r := Report{Via: "direct"}
	if d.viaProxy() {
		r.Via = "egress proxy " + d.Settings.Proxy.Host
	}
	start := time.Now()
	var conn net.Conn
	var err error
	if d.Target.Scheme == "https" {
		conn, err = d.DialTLS(ctx, "tcp", Addr(d.Target))
	} else {
		conn, err = d.Dial(ctx, "tcp", Addr(d.Target))
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return r, errors.New(e.Msg)
		}
		return r, err
	}
	defer conn.Close()
	r.Took = time.Since(start)
	r.Protocol = "http"
	if tc, ok := conn.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		r.Protocol = cs.NegotiatedProtocol
		if r.Protocol == "" {
			r.Protocol = "http/1.1"
		}
		r.Chain = cs.PeerCertificates
		if len(cs.VerifiedChains) > 0 {
			r.Chain = cs.VerifiedChains[0]
		}
	}
	return r, nil
}
