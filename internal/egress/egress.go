// Package egress opens keybroker's connections to vendors: TCP directly
// or through an HTTP CONNECT proxy, the TLS handshake verified against the
// system roots plus a configured CA, and the http.Transport that uses
// them. Each phase has its own timeout and a failure names its phase in an
// *Error. It knows nothing of callers, credentials' meaning or the error
// contract: the proxy maps an *Error to a reply.
package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Settings say how an upstream is reached. Zero values mean the defaults.
type Settings struct {
	// Proxy is the CONNECT proxy (http://host:port); nil: direct. Only
	// https upstreams use it.
	Proxy *url.URL
	// RootCAs verify the vendor's certificate; nil: the system roots.
	RootCAs *x509.CertPool
	// CAFile is where RootCAs' extra CA came from (for reports); "": none.
	CAFile string
	// DialTimeout bounds the TCP connect (to the vendor or the proxy),
	// ConnectTimeout the CONNECT exchange, TLSHandshakeTimeout the
	// handshake: 10s each by default. IdleTimeout closes idle connections:
	// 90s by default.
	DialTimeout, ConnectTimeout, TLSHandshakeTimeout, IdleTimeout time.Duration
}

// Default timeouts.
const (
	DefaultPhaseTimeout = 10 * time.Second
	DefaultIdleTimeout  = 90 * time.Second
)

// WithDefaults returns s with every zero timeout set to its default.
func (s Settings) WithDefaults() Settings {
	for _, d := range []*time.Duration{&s.DialTimeout, &s.ConnectTimeout, &s.TLSHandshakeTimeout} {
		if *d <= 0 {
			*d = DefaultPhaseTimeout
		}
	}
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = DefaultIdleTimeout
	}
	return s
}

// Phases of opening a connection to a vendor, as Error.Phase names them.
const (
	PhaseDial        = "dial"
	PhaseProxy       = "egress proxy"
	PhaseConnect     = "CONNECT"
	PhaseTLS         = "TLS handshake"
	PhaseCertificate = "certificate"
)

// Error is a failure to open a connection to a vendor, in an operator's
// terms: which phase, whether a timeout ran out, and why. The request
// never left. Msg names the upstream and the setting to look at, never a
// value.
type Error struct {
	Phase   string
	Timeout bool
	// Reason classifies TLS failures: timeout, handshake, unknown_authority,
	// expired, invalid, name_mismatch, verification.
	Reason string
	Msg    string
	Err    error
}

func (e *Error) Error() string { return e.Msg + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Dialer opens connections to one upstream.
type Dialer struct {
	// Upstream names the upstream in messages.
	Upstream string
	// Target is the upstream's base URL: its scheme decides TLS and
	// whether the egress proxy is used.
	Target *url.URL
	// Settings; NewDialer applies the defaults.
	Settings Settings
	// ProxyCredential returns the egress proxy's user and password for one
	// CONNECT (read per tunnel, so a rotated one is used at once); nil:
	// the proxy needs none.
	ProxyCredential func(ctx context.Context) (user, password string, err error)
	// OnTLSFailure, when set, is told the reason of each failed handshake.
	OnTLSFailure func(reason string)

	certExpiry atomic.Int64
}

// NewDialer returns a Dialer for target with the settings' defaults applied.
func NewDialer(upstream string, target *url.URL, s Settings) *Dialer {
	return &Dialer{Upstream: upstream, Target: target, Settings: s.WithDefaults()}
}

// CertExpiry is when the vendor's certificate, as last seen, expires (zero
// before the first handshake).
func (d *Dialer) CertExpiry() time.Time {
	if s := d.certExpiry.Load(); s != 0 {
		return time.Unix(s, 0)
	}
	return time.Time{}
}

// NewTransport returns the upstream's own transport: explicit timeouts,
// the Dialer's connections and handshakes, HTTP/2 when the vendor offers
// it, and no environment proxy (a credential goes only to its upstream's
// host). http.DefaultTransport is never used or changed. headerTimeout
// bounds the wait for the vendor's response headers.
//
// Request headers are sent to an HTTP/2 vendor without HPACK's dynamic
// table (its size capped at one byte, so nothing is indexed): every call
// carries a fresh X-Request-Id, and indexing it only to evict it a few
// calls later cost about a tenth of a call's CPU, in the caller's
// goroutine, before the request could leave. The few header bytes saved
// by indexing the rest are not worth it on a vendor link.
func NewTransport(d *Dialer, headerTimeout time.Duration) *http.Transport {
	return &http.Transport{
		HTTP2:                 &http.HTTP2Config{MaxEncoderHeaderTableSize: 1},
		Proxy:                 nil,
		DialContext:           d.Dial,
		DialTLSContext:        d.DialTLS,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       d.Settings.IdleTimeout,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: headerTimeout,
	}
}

// viaProxy reports whether connections go through the egress proxy.
func (d *Dialer) viaProxy() bool { return d.Settings.Proxy != nil && d.Target.Scheme == "https" }

// Dial opens a TCP connection to addr: directly, or (for an https upstream
// with an egress proxy) a CONNECT tunnel through the proxy.
func (d *Dialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	s := d.Settings
	nd := net.Dialer{Timeout: s.DialTimeout, KeepAlive: 30 * time.Second}
	if !d.viaProxy() {
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &Error{Phase: PhaseDial, Timeout: IsTimeout(err) && ctx.Err() == nil, Err: err,
				Msg: fmt.Sprintf("could not connect to upstream %s (%s)", strconv.Quote(d.Upstream), timeoutNote(err, "egress.dial_timeout", s.DialTimeout))}
		}
		return c, nil
	}
	proxyHost := s.Proxy.Host
	c, err := nd.DialContext(ctx, "tcp", proxyHost)
	if err != nil {
		return nil, &Error{Phase: PhaseProxy, Timeout: IsTimeout(err) && ctx.Err() == nil, Err: err,
			Msg: fmt.Sprintf("could not connect to the egress proxy %s (%s)", proxyHost, timeoutNote(err, "egress.dial_timeout", s.DialTimeout))}
	}
	tunnel, err := d.connect(ctx, c, addr)
	if err != nil {
		c.Close()
		return nil, err
	}
	return tunnel, nil
}

// connect asks the egress proxy for a tunnel to addr. The proxy's own
// credential goes on this request only; everything after it is TLS to the
// vendor, which the proxy cannot read.
//
// It is written here rather than left to http.Transport's Proxy field:
// that would bound the exchange by Transport's fixed minute instead of
// egress.connect_timeout, and its TLS failures through a proxy could not
// be named by phase (DialTLSContext is not used for proxied connections).
func (d *Dialer) connect(ctx context.Context, c net.Conn, addr string) (net.Conn, error) {
	s := d.Settings
	fail := func(timeout bool, err error, format string, args ...any) error {
		return &Error{Phase: PhaseConnect, Timeout: timeout, Err: err, Msg: fmt.Sprintf(format, args...)}
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if d.ProxyCredential != nil {
		user, pass, err := d.ProxyCredential(ctx)
		if err != nil {
			return nil, fail(false, err, "no usable credential for the egress proxy %s", s.Proxy.Host)
		}
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	}
	deadline := time.Now().Add(s.ConnectTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := req.Write(c); err != nil {
		return nil, fail(IsTimeout(err), err, "the egress proxy %s failed during CONNECT (%s)", s.Proxy.Host, timeoutNote(err, "egress.connect_timeout", s.ConnectTimeout))
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fail(IsTimeout(err) && ctx.Err() == nil, err, "the egress proxy %s did not answer CONNECT (%s)", s.Proxy.Host, timeoutNote(err, "egress.connect_timeout", s.ConnectTimeout))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The status number only: the reason phrase is the proxy's text.
		code := strconv.Itoa(resp.StatusCode)
		return nil, fail(false, errors.New("CONNECT answered "+code), "the egress proxy %s refused the tunnel to %s: %s", s.Proxy.Host, addr, code)
	}
	_ = c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn is a tunnel whose first bytes were read with the CONNECT
// reply.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// DialTLS opens the connection and makes the TLS handshake itself, so that
// its failures are named: verified against RootCAs (system roots plus the
// configured CA), SNI set to the upstream host, HTTP/2 offered.
func (d *Dialer) DialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	s := d.Settings
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(c, &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    s.RootCAs,
		ServerName: host, // SNI (not sent for an IP address)
		NextProtos: []string{"h2", "http/1.1"},
	})
	hctx, cancel := context.WithTimeout(ctx, s.TLSHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		e := d.tlsError(err, ctx.Err() == nil && hctx.Err() != nil)
		if d.OnTLSFailure != nil {
			d.OnTLSFailure(e.Reason)
		}
		return nil, e
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		d.certExpiry.Store(certs[0].NotAfter.Unix())
	}
	return tc, nil
}

// TLSFailureReasons are every reason OnTLSFailure is given: a fixed
// vocabulary, so that metrics can export each from the start.
var TLSFailureReasons = []string{"timeout", "handshake", "unknown_authority", "expired", "invalid", "name_mismatch", "verification"}

// tlsError names why the handshake with the vendor failed.
func (d *Dialer) tlsError(err error, timedOut bool) *Error {
	name := strconv.Quote(d.Upstream)
	if timedOut {
		return &Error{Phase: PhaseTLS, Timeout: true, Reason: "timeout", Err: err,
			Msg: fmt.Sprintf("the TLS handshake with upstream %s timed out (egress.tls_handshake_timeout %s)", name, d.Settings.TLSHandshakeTimeout)}
	}
	reason, why := certReason(err)
	if reason != "" {
		return &Error{Phase: PhaseCertificate, Reason: reason, Err: err,
			Msg: fmt.Sprintf("the certificate of upstream %s could not be verified: %s", name, why)}
	}
	return &Error{Phase: PhaseTLS, Reason: "handshake", Err: err,
		Msg: fmt.Sprintf("the TLS handshake with upstream %s failed", name)}
}

// certReason classifies a certificate verification failure.
func certReason(err error) (reason, why string) {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknown):
		return "unknown_authority", "signed by an unknown authority (trust its CA with egress.ca_file)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "expired", "expired or not yet valid"
	case errors.As(err, &invalid):
		return "invalid", "not valid for this use"
	case errors.As(err, &host):
		return "name_mismatch", "issued for another host name"
	}
	var verify *tls.CertificateVerificationError
	if errors.As(err, &verify) {
		return "verification", "verification failed"
	}
	return "", ""
}

// timeoutNote says why a connection failed, for the caller: the timeout
// that ran out, the DNS failure (without the resolver's address, an
// internal one), or the connect error.
func timeoutNote(err error, setting string, d time.Duration) string {
	var dns *net.DNSError
	switch {
	case errors.As(err, &dns) && dns.IsTimeout:
		return fmt.Sprintf("the DNS lookup of %s timed out", dns.Name)
	case errors.As(err, &dns):
		return fmt.Sprintf("the DNS lookup of %s failed", dns.Name)
	case IsTimeout(err):
		return fmt.Sprintf("timed out: %s %s", setting, d)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return "connection failed"
}

// Describe names a failed exchange with a vendor (or its token endpoint,
// or the egress proxy) for the operational log, in keybroker's and Go's
// fixed words only: a reply's own text (a reason phrase, an HTTP/2
// GOAWAY's debug data, the bytes of a malformed reply) is never repeated.
// A certificate's fault keeps Go's description, whose names are the
// certificate's: the log may have them, a caller never does.
func Describe(err error) string {
	var eg *Error
	var alert tls.AlertError
	var rec tls.RecordHeaderError
	var verify *tls.CertificateVerificationError
	var dns *net.DNSError
	var errno syscall.Errno
	switch {
	case err == nil:
		return ""
	case errors.As(err, &verify):
		return "certificate: " + verify.Err.Error()
	case errors.As(err, &eg):
		return eg.Phase + ": " + Describe(eg.Err)
	case IsTimeout(err):
		return "timed out"
	case errors.As(err, &dns):
		return "DNS lookup of " + dns.Name + " failed"
	case errors.As(err, &alert):
		return "TLS alert: " + alert.Error() // Go's fixed alert names
	case errors.As(err, &rec):
		return "the reply is not TLS"
	case errors.As(err, &errno):
		return errno.Error() // the operating system's fixed words
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection closed before the reply ended"
	case strings.Contains(err.Error(), "GOAWAY"):
		return "the vendor closed the HTTP/2 connection (GOAWAY)"
	case strings.Contains(err.Error(), "malformed"):
		return "a malformed reply"
	}
	return fmt.Sprintf("transport error (%T)", err)
}

// IsTimeout reports whether err is a deadline or a network timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// Addr is the host:port to dial for a URL: its port, else the scheme's.
func Addr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
