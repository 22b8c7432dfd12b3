package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Egress is how an upstream is reached: directly or through an HTTP
// CONNECT proxy, and which CAs verify the vendor. Each phase of opening a
// connection has its own timeout and names itself when it fails.
type Egress struct {
	// Proxy is the CONNECT proxy (http://host:port); nil: direct. Only
	// https upstreams use it.
	Proxy *url.URL
	// ProxyCredential names a credential (fields username, password) in
	// Options.Credentials, sent as Basic auth on CONNECT only; "": none.
	ProxyCredential string
	// RootCAs verify the vendor's certificate; nil: the system roots.
	RootCAs *x509.CertPool
	// CAFile is where RootCAs' extra CA came from (for reports); "": none.
	CAFile string
	// Timeouts. Defaults: dial, CONNECT and TLS handshake 10s, idle 90s.
	DialTimeout, ConnectTimeout, TLSHandshakeTimeout, IdleTimeout time.Duration
}

// EgressCredential is the credential name assemble gives the egress
// proxy's credential; no upstream can have it.
const EgressCredential = "_egress_proxy"

func (e *Egress) defaults() {
	for _, d := range []*time.Duration{&e.DialTimeout, &e.ConnectTimeout, &e.TLSHandshakeTimeout} {
		if *d <= 0 {
			*d = 10 * time.Second
		}
	}
	if e.IdleTimeout <= 0 {
		e.IdleTimeout = 90 * time.Second
	}
}

// Phases of opening a connection to a vendor.
const (
	phaseDial      = "dial"
	phaseProxy     = "egress proxy"
	phaseConnect   = "CONNECT"
	phaseTLS       = "TLS handshake"
	phaseCertifate = "certificate"
)

// egressError is a failure to open a connection to a vendor, in the
// caller's terms: which phase, and why. The request never left.
type egressError struct {
	phase   string
	timeout bool
	reason  string // certificate: unknown_authority, expired, name_mismatch, ...
	msg     string
	err     error
}

func (e *egressError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *egressError) Unwrap() error { return e.err }

func (e *egressError) code() string {
	if e.timeout {
		return CodeUpstreamTimeout
	}
	return CodeUpstreamUnreachable
}

// newTransport returns the upstream's own transport: explicit timeouts,
// keybroker's own dialing (direct or through the egress proxy) and TLS
// handshake, HTTP/2 when the vendor offers it, TLS 1.2 or later, and no
// environment proxy (a credential goes only to its upstream's host).
// http.DefaultTransport is never used or changed.
func (u *upstream) newTransport() *http.Transport {
	eg := u.cfg.Egress
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           u.dial,
		DialTLSContext:        u.dialTLS,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       eg.IdleTimeout,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: u.cfg.Timeout,
	}
}

// dial opens a TCP connection to addr: directly, or (for https upstreams
// with an egress proxy) a CONNECT tunnel through the proxy.
func (u *upstream) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	eg := u.cfg.Egress
	d := net.Dialer{Timeout: eg.DialTimeout, KeepAlive: 30 * time.Second}
	if eg.Proxy == nil || u.cfg.Target.Scheme != "https" {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &egressError{phase: phaseDial, timeout: isTimeout(err) && ctx.Err() == nil, err: err,
				msg: fmt.Sprintf("could not connect to upstream %s (%s)", quoteName(u.cfg.Name), timeoutNote(err, "egress.dial_timeout", eg.DialTimeout))}
		}
		return c, nil
	}
	proxyHost := eg.Proxy.Host
	c, err := d.DialContext(ctx, "tcp", proxyHost)
	if err != nil {
		return nil, &egressError{phase: phaseProxy, timeout: isTimeout(err) && ctx.Err() == nil, err: err,
			msg: fmt.Sprintf("could not connect to the egress proxy %s (%s)", proxyHost, timeoutNote(err, "egress.dial_timeout", eg.DialTimeout))}
	}
	tunnel, err := u.connect(ctx, c, addr)
	if err != nil {
		c.Close()
		return nil, err
	}
	return tunnel, nil
}

// connect asks the egress proxy for a tunnel to addr. The proxy's own
// credential goes on this request only; everything after it is TLS to the
// vendor, which the proxy cannot read.
func (u *upstream) connect(ctx context.Context, c net.Conn, addr string) (net.Conn, error) {
	eg := u.cfg.Egress
	fail := func(timeout bool, err error, format string, args ...any) error {
		return &egressError{phase: phaseConnect, timeout: timeout, err: err, msg: fmt.Sprintf(format, args...)}
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if eg.ProxyCredential != "" {
		cred, err := u.p.opts.Credentials.Get(ctx, eg.ProxyCredential)
		if err != nil {
			return nil, fail(false, err, "no usable credential for the egress proxy %s", eg.Proxy.Host)
		}
		user, _ := cred.Field("username")
		pass, _ := cred.Field("password")
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user.Reveal()+":"+pass.Reveal())))
	}
	deadline := time.Now().Add(eg.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := req.Write(c); err != nil {
		return nil, fail(isTimeout(err), err, "the egress proxy %s failed during CONNECT (%s)", eg.Proxy.Host, timeoutNote(err, "egress.connect_timeout", eg.ConnectTimeout))
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fail(isTimeout(err) && ctx.Err() == nil, err, "the egress proxy %s did not answer CONNECT (%s)", eg.Proxy.Host, timeoutNote(err, "egress.connect_timeout", eg.ConnectTimeout))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fail(false, errors.New(resp.Status), "the egress proxy %s refused the tunnel to %s: %s", eg.Proxy.Host, addr, resp.Status)
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

// dialTLS opens the connection and makes the TLS handshake itself, so that
// its failures are named: verified against RootCAs (system roots plus the
// configured CA), SNI set to the upstream host, HTTP/2 offered.
func (u *upstream) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := u.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	eg := u.cfg.Egress
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(c, &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    eg.RootCAs,
		ServerName: host, // SNI (not sent for an IP address)
		NextProtos: []string{"h2", "http/1.1"},
	})
	hctx, cancel := context.WithTimeout(ctx, eg.TLSHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		e := u.tlsError(err, ctx.Err() == nil && hctx.Err() != nil)
		if o := u.p.opts.Observer; o != nil {
			if tf, ok := o.(TLSObserver); ok {
				tf.TLSHandshakeFailed(u.cfg.Name, e.reason)
			}
		}
		return nil, e
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		u.certExpiry.Store(certs[0].NotAfter.Unix())
	}
	return tc, nil
}

// tlsError names why the handshake with the vendor failed.
func (u *upstream) tlsError(err error, timedOut bool) *egressError {
	name := quoteName(u.cfg.Name)
	if timedOut {
		return &egressError{phase: phaseTLS, timeout: true, reason: "timeout", err: err,
			msg: fmt.Sprintf("the TLS handshake with upstream %s timed out (egress.tls_handshake_timeout %s)", name, u.cfg.Egress.TLSHandshakeTimeout)}
	}
	reason, why := certReason(err)
	if reason != "" {
		return &egressError{phase: phaseCertifate, reason: reason, err: err,
			msg: fmt.Sprintf("the certificate of upstream %s could not be verified: %s", name, why)}
	}
	return &egressError{phase: phaseTLS, reason: "handshake", err: err,
		msg: fmt.Sprintf("the TLS handshake with upstream %s failed", name)}
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
	case isTimeout(err):
		return fmt.Sprintf("timed out: %s %s", setting, d)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return "connection failed"
}

// TLSObserver, when the Observer implements it, is told of failed TLS
// handshakes with vendors, by upstream and reason.
type TLSObserver interface {
	TLSHandshakeFailed(upstream, reason string)
}

// CertExpiries returns, per upstream reached over TLS, when the vendor's
// certificate (as last seen) expires.
func (p *Proxy) CertExpiries() map[string]time.Time {
	out := map[string]time.Time{}
	for name, u := range p.state.Load().upstreams {
		if s := u.certExpiry.Load(); s != 0 {
			out[name] = time.Unix(s, 0)
		}
	}
	return out
}

// logEgress logs a failed connection with its cause (never a value).
func (u *upstream) logEgress(c *call, e *egressError) {
	u.p.opts.Log.Warn("could not reach the vendor", zap.String("request_id", c.id), zap.String("upstream", u.cfg.Name),
		zap.String("phase", e.phase), zap.String("reason", e.reason), zap.Error(e.err))
}

// UpstreamCheck is what CheckUpstream found about reaching one upstream.
type UpstreamCheck struct {
	// Via is "direct" or "egress proxy host:port".
	Via string
	// Protocol is h2 or http/1.1 over TLS, or "http" for plain http.
	Protocol string
	// Chain is the verified certificate chain, leaf first.
	Chain []*x509.Certificate
	// Took is the time to connect (and tunnel) and complete the handshake.
	Took time.Duration
}

// CheckUpstream opens a connection to up the way calls do (through the
// egress proxy when one is set, TLS verified as for a call) and reports
// it. It sends no request and no vendor credential; creds is asked only
// for the egress proxy's credential.
func CheckUpstream(ctx context.Context, up Upstream, creds Credentials) (UpstreamCheck, error) {
	up.Egress.defaults()
	u := &upstream{cfg: up, p: &Proxy{opts: Options{Credentials: creds, Log: zap.NewNop()}}, certExpiry: new(atomic.Int64)}
	addr := up.Target.Host
	if up.Target.Port() == "" {
		addr = net.JoinHostPort(up.Target.Hostname(), map[bool]string{true: "443", false: "80"}[up.Target.Scheme == "https"])
	}
	ch := UpstreamCheck{Via: "direct"}
	if up.Egress.Proxy != nil && up.Target.Scheme == "https" {
		ch.Via = "egress proxy " + up.Egress.Proxy.Host
	}
	start := time.Now()
	var conn net.Conn
	var err error
	if up.Target.Scheme == "https" {
		conn, err = u.dialTLS(ctx, "tcp", addr)
	} else {
		conn, err = u.dial(ctx, "tcp", addr)
	}
	if err != nil {
		var eg *egressError
		if errors.As(err, &eg) {
			return ch, errors.New(eg.msg)
		}
		return ch, err
	}
	defer conn.Close()
	ch.Took = time.Since(start)
	ch.Protocol = "http"
	if tc, ok := conn.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		ch.Protocol = cs.NegotiatedProtocol
		if ch.Protocol == "" {
			ch.Protocol = "http/1.1"
		}
		ch.Chain = cs.PeerCertificates
		if len(cs.VerifiedChains) > 0 {
			ch.Chain = cs.VerifiedChains[0]
		}
	}
	return ch, nil
}
