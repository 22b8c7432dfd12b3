package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/reply"
	"github.com/keybroker/keybroker/internal/secrets"
)

// upstream is one vendor: its reverse proxy and its own transport.
type upstream struct {
	spec      Upstream // as configured, defaults applied
	limitKey  string   // the quota's key in the upstream limiter
	slot      callers.Slot
	dialer    *egress.Dialer
	transport *http.Transport
	rp        *httputil.ReverseProxy
	p         *Proxy

	// stripHeaders never reach the vendor (canonical names): alwaysStrip
	// and the headers this upstream's vendor reads as credentials.
	stripHeaders map[string]bool
	// stripQuery are query parameters that may carry a caller's key or a
	// credential and never reach the vendor: the slot's parameters.
	stripQuery []string
	// guard keeps the vendor's replies from handing the caller a secret or
	// a link around keybroker.
	guard *reply.Guard
	// leaks caches the injected values for the current credential version,
	// which no reply header may carry.
	leaks atomic.Pointer[leakSet]
	// refused is the last vendor 401 (Unix nanoseconds), kept across
	// reloads with the transport; refusedVersion the credential version
	// it refused.
	refused        *atomic.Int64
	refusedVersion *atomic.Int64
	// tokenPath is where keybroker's own token endpoint answers below
	// /{upstream} ("": none).
	tokenPath string
}

// TransportKey is what the upstream's connections are made from: an
// upstream whose key did not change keeps its connection pool across a
// reload.
func (u Upstream) TransportKey() string {
	e := u.Egress
	proxy := ""
	if e.Proxy != nil {
		proxy = e.Proxy.String()
	}
	return fmt.Sprint(u.Target, u.Timeout, proxy, u.ProxyCredential, e.CAFile, e.RootCAs != nil,
		e.DialTimeout, e.ConnectTimeout, e.TLSHandshakeTimeout, e.IdleTimeout)
}

// alwaysStrip are request headers no vendor ever receives from a caller:
// the caller's credentials, anything that tells the vendor about internal
// addresses, and the headers that common vendor frameworks read as a
// different method or path than the one the policy judged.
var alwaysStrip = []string{
	"Authorization", "Proxy-Authorization", "Cookie",
	"Forwarded", "Via", "X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "X-Cluster-Client-Ip", "X-Host",
	"X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
}

// stripPrefixes are header families stripped whole: X-Forwarded-* (For,
// Host, Proto, Port, Prefix, Server, ...), X-Original-* (URL, URI, Method)
// and X-Rewrite-* (URL).
var stripPrefixes = []string{"X-Forwarded-", "X-Original-", "X-Rewrite-"}

// headerName is how a vendor framework may read a header name: CGI, WSGI
// and Rack turn "_" into "-", so X_Forwarded_For counts as X-Forwarded-For.
func headerName(k string) string {
	if strings.IndexByte(k, '_') < 0 {
		return k
	}
	return http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
}

// stripRequestHeaders deletes from h every header in strip (canonical
// names) or in a stripped family, however the caller spelled it.
func stripRequestHeaders(h http.Header, strip map[string]bool) {
	for k := range h {
		n := headerName(k)
		if strip[n] {
			delete(h, k)
			continue
		}
		for _, p := range stripPrefixes {
			if len(n) >= len(p) && strings.EqualFold(n[:len(p)], p) {
				delete(h, k)
				break
			}
		}
	}
}

// QuotaKey is the key an upstream's quota is kept under in the limiter.
func QuotaKey(upstream string) string { return "upstream:" + upstream }

// newUpstream prepares what an upstream needs per call once: the strip
// lists from its auth scheme's slot, the link paths, its limiter key.
func (p *Proxy) newUpstream(cfg Upstream, prev *upstream) *upstream {
	slot := cfg.Auth.Slot()
	u := &upstream{spec: cfg, p: p, slot: slot, limitKey: QuotaKey(cfg.Name), stripQuery: slot.Params}
	u.stripHeaders = map[string]bool{}
	for _, h := range append(alwaysStrip[:len(alwaysStrip):len(alwaysStrip)], slot.Headers...) {
		u.stripHeaders[http.CanonicalHeaderKey(h)] = true
	}
	ro := reply.Options{Upstream: cfg.Name, Target: cfg.Target, CredentialParams: slot.Params,
		Links: cfg.RewriteLinks, Log: p.opts.Log}
	if h := p.opts.Hooks.LinkDropped; h != nil {
		ro.LinkDropped = func() { h(cfg.Name) }
	}
	u.guard = reply.NewGuard(ro)

	if prev != nil {
		u.refused, u.refusedVersion = prev.refused, prev.refusedVersion
	} else {
		u.refused, u.refusedVersion = new(atomic.Int64), new(atomic.Int64)
	}
	if prev != nil && prev.spec.TransportKey() == cfg.TransportKey() {
		u.dialer, u.transport = prev.dialer, prev.transport
	} else {
		u.dialer = NewDialer(cfg, p.opts.Credentials.Get)
		if h := p.opts.Hooks.TLSHandshakeFailed; h != nil {
			u.dialer.OnTLSFailure = func(reason string) { h(cfg.Name, reason) }
		}
		u.transport = egress.NewTransport(u.dialer, cfg.Timeout)
	}
	u.tokenPath = cfg.TokenPath
	u.rp = &httputil.ReverseProxy{
		Rewrite:        u.rewrite,
		Transport:      noInformational{u.transport},
		ModifyResponse: u.modifyResponse,
		ErrorHandler:   u.errorHandler,
		ErrorLog:       zap.NewStdLog(p.opts.Log.Named("reverseproxy")),
		// Without a pool ReverseProxy allocates a 32 KiB copy buffer per
		// reply.
		BufferPool: &copyBuffers,
		// No FlushInterval: ReverseProxy flushes every write of a reply
		// that streams (no Content-Length, or text/event-stream) by
		// itself, and a reply of known length needs no timer.
	}
	return u
}

// noInformational sends a request without the client trace ReverseProxy
// attaches to it. ReverseProxy's trace hands a vendor's 1xx replies (103
// Early Hints, 102 Processing) straight to the caller, headers and all,
// before ModifyResponse and so before the reply guard: a vendor could echo
// the injected credential in one. Without a trace Go's transport reads and
// drops them, and the caller gets only the guarded reply.
type noInformational struct{ rt http.RoundTripper }

func (n noInformational) RoundTrip(req *http.Request) (*http.Response, error) {
	return n.rt.RoundTrip(req.WithContext(untraced{req.Context()}))
}

// untraced hides any httptrace.ClientTrace in its parent.
type untraced struct{ context.Context }

func (u untraced) Value(key any) any {
	v := u.Context.Value(key)
	if _, ok := v.(*httptrace.ClientTrace); ok {
		return nil
	}
	return v
}

// NewDialer is how the proxy reaches up: its egress settings, and the
// egress proxy's credential read with get per tunnel.
func NewDialer(up Upstream, get func(ctx context.Context, name string) (secrets.Credential, error)) *egress.Dialer {
	d := egress.NewDialer(up.Name, up.Target, up.Egress)
	if name := up.ProxyCredential; name != "" {
		d.ProxyCredential = func(ctx context.Context) (string, string, error) {
			cred, err := get(ctx, name)
			if err != nil {
				return "", "", err
			}
			user, _ := cred.Field("username")
			pass, _ := cred.Field("password")
			return user.Reveal(), pass.Reveal(), nil
		}
	}
	return d
}

// VendorRefusal is the last time a vendor answered 401, and the
// credential version it refused.
type VendorRefusal struct {
	At      time.Time
	Version int
}

// LastVendorRefusals returns, per upstream, its vendor's last 401.
func (p *Proxy) LastVendorRefusals() map[string]VendorRefusal {
	out := map[string]VendorRefusal{}
	for name, u := range p.state.Load().upstreams {
		if n := u.refused.Load(); n != 0 {
			out[name] = VendorRefusal{At: time.Unix(0, n), Version: int(u.refusedVersion.Load())}
		}
	}
	return out
}

// CertExpiries returns, per upstream reached over TLS, when the vendor's
// certificate (as last seen) expires.
func (p *Proxy) CertExpiries() map[string]time.Time {
	out := map[string]time.Time{}
	for name, u := range p.state.Load().upstreams {
		if t := u.dialer.CertExpiry(); !t.IsZero() {
			out[name] = t
		}
	}
	return out
}

// copyBufferSize is the size of ReverseProxy's copy buffers.
const copyBufferSize = 32 << 10

// copyBuffers lends ReverseProxy its copy buffers (httputil.BufferPool).
var copyBuffers bufferPool

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, _ := b.p.Get().(*[copyBufferSize]byte); v != nil {
		return v[:]
	}
	return make([]byte, copyBufferSize)
}

// Put keeps only buffers of the pool's size; the conversion to an array
// pointer stores them without a new allocation.
func (b *bufferPool) Put(buf []byte) {
	if len(buf) == copyBufferSize {
		b.p.Put((*[copyBufferSize]byte)(buf))
	}
}

// dropinSlot says where a drop-in caller's key sits for this upstream
// (nowhere for an unknown one).
func (u *upstream) dropinSlot() callers.Slot {
	if u == nil {
		return callers.Slot{}
	}
	return u.slot
}

// rewrite builds the vendor request. It runs after ReverseProxy removed
// hop-by-hop headers (including any the caller listed in Connection), so
// the credential set here always survives.
func (u *upstream) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In.Context())
	out := pr.Out
	t := u.spec.Target
	out.URL.Scheme = t.Scheme
	out.URL.Host = t.Host
	out.URL.Path = t.Path + c.rest
	out.URL.RawPath = ""
	out.URL.RawQuery = c.query
	out.Host = ""
	stripRequestHeaders(out.Header, u.stripHeaders)
	// Request trailers are never forwarded: a chunked body could otherwise
	// carry Authorization, Cookie or anything else stripped above.
	out.Trailer = nil
	out.Header.Set("X-Request-Id", c.id)
	if u.guard.RewritesBodies() {
		// The transport asks for gzip itself and decompresses it, so the
		// reply's links can be read and rewritten whatever the caller
		// accepts (a br or zstd reply could not be).
		out.Header.Del("Accept-Encoding")
	}
	for k, v := range u.spec.DefaultHeaders {
		if len(out.Header[k]) == 0 && (k != "Content-Type" || c.hasBody) {
			out.Header[k] = []string{v}
		}
	}
	u.spec.Auth.Inject(out, c.cred)
	c.sentAt = u.p.opts.Now()
	c.sent = true
}

// modifyResponse sees the vendor's reply before the caller does.
func (u *upstream) modifyResponse(resp *http.Response) error {
	c := callFrom(resp.Request.Context())
	c.reached = true
	c.rec.UpstreamMS = ms(u.p.opts.Now().Sub(c.sentAt))

	if resp.StatusCode == http.StatusUnauthorized && c.replayable {
		if err := u.retryWithNewCredential(resp, c); err != nil {
			return err
		}
	}
	// The vendor has counted the call (and its retry): the quota slot is
	// held from now until the window has passed.
	c.ticket.Release(true)
	if resp.StatusCode == http.StatusTooManyRequests {
		u.vendorThrottled(resp, c)
	}
	u.cleanReply(resp)
	if c.quota != nil {
		quotaHeaders(resp.Header, u.spec.Quota, c.rec.Caller, c.quota)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		u.refused.Store(u.p.opts.Now().UnixNano())
		u.refusedVersion.Store(int64(c.cred.Version))
		u.expiredWarning(resp, c)
	}
	return u.guard.Guard(resp, reply.Call{RequestID: c.id, Origin: reply.OriginOf(c.in), Leaks: u.leakValues(c.cred),
		Head: c.in.Method == http.MethodHead})
}

// expiredWarning marks a vendor 401 on a credential keybroker knows has
// expired: the vendor's reply passes unchanged, with a Keybroker-Warning
// header, and the audit record says the same.
func (u *upstream) expiredWarning(resp *http.Response, c *call) {
	x := c.cred.Expiry
	if x.At.IsZero() || u.p.opts.Now().Before(x.At) {
		return
	}
	msg := fmt.Sprintf("credential version %d expired at %s (from %s)", c.cred.Version, x.At.UTC().Format(time.RFC3339), x.From)
	resp.Header.Set(WarningHeader, msg)
	c.rec.Error = msg
}

// WarningHeader carries keybroker's note on a vendor reply it passes on
// unchanged.
const WarningHeader = "Keybroker-Warning"

// cleanReply keeps vendor session state and keybroker's own markers out of
// the caller's hands.
func (u *upstream) cleanReply(resp *http.Response) {
	h := resp.Header
	// A session cookie is a credential of its own: callers never get one.
	h.Del("Set-Cookie")
	// Only keybroker says Keybroker-Error or Keybroker-Warning.
	h.Del(ErrorHeader)
	h.Del(WarningHeader)
	// Keep keybroker's X-Request-Id the only one; the vendor's is kept
	// under another name for support tickets.
	if v := h.Values("X-Request-Id"); len(v) > 0 {
		h.Del("X-Request-Id")
		h["X-Vendor-Request-Id"] = v
	}
}

// vendorThrottled pauses the upstream after a vendor 429: for the vendor's
// Retry-After, else the preset's default (Huntress: a whole window), so no
// further call is sent into the wall. The caller's copy of the 429 gets a
// Retry-After if the vendor sent none.
func (u *upstream) vendorThrottled(resp *http.Response, c *call) {
	now := u.p.opts.Now()
	wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now)
	if !ok {
		wait = u.spec.VendorPause
		if wait <= 0 {
			wait = u.spec.Quota.Per
		}
		if wait <= 0 {
			wait = 5 * time.Second
		}
		resp.Header.Set("Retry-After", strconv.Itoa(max(1, ceilSeconds(wait))))
	}
	u.p.opts.UpstreamLimiter.Pause(u.limitKey, now.Add(wait))
	c.rec.Error = "vendor answered 429; upstream paused"
	u.p.opts.Log.Warn("vendor rate limit hit; pausing upstream",
		zap.String("upstream", u.spec.Name), zap.Duration("pause", wait))
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

// retryWithNewCredential handles a vendor 401: the credentials are told
// the credential the call carried was refused; if they have another (a
// rotated version, a renewed token), the request goes once more with it
// and the caller gets that reply.
func (u *upstream) retryWithNewCredential(resp *http.Response, c *call) error {
	ctx := resp.Request.Context()
	fresh, ok := u.p.opts.Credentials.Refused(ctx, u.spec.Name, c.cred)
	if !ok {
		return nil
	}
	req := resp.Request.Clone(ctx)
	if c.body != nil {
		req.Body = io.NopCloser(bytes.NewReader(c.body))
		req.ContentLength = int64(len(c.body))
	}
	u.spec.Auth.Inject(req, fresh)
	c.sentAt = u.p.opts.Now()
	// The retry is sent from inside ModifyResponse, so ReverseProxy's own
	// send path (and its hop-by-hop cleanup of the reply) does not run for
	// it: the transport is called directly, the reply's hop-by-hop headers
	// are removed here, and *resp is replaced in place by the new reply.
	next, err := noInformational{u.transport}.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	removeHopByHop(next.Header)
	*resp = *next
	c.cred = fresh
	c.rec.Credential = &audit.CredentialRef{Source: fresh.Source, Ref: fresh.Ref, Version: fresh.Version}
	c.rec.Retried = true
	c.rec.UpstreamMS = ms(u.p.opts.Now().Sub(c.sentAt))
	u.p.opts.Log.Info("vendor refused the credential; retried with the rotated one",
		zap.String("upstream", u.spec.Name), zap.Int("version", fresh.Version), zap.Int("status", next.StatusCode))
	return nil
}

var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, sf := range strings.Split(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// errorHandler turns a failed vendor call into the contract's reply.
func (u *upstream) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	c := callFrom(r.Context())
	// A call that could not even connect never reached the vendor; any
	// other failure may have been counted, so its slot is held.
	var eg *egress.Error
	c.ticket.Release(!errors.As(err, &eg) && !isDial(err))
	var tooBig *http.MaxBytesError
	var badEncoding *reply.EncodingError
	switch {
	case r.Context().Err() != nil:
		// outcome() records the call as cancelled.
		c.rec.Error = "caller went away"
		return
	case errors.As(err, &tooBig):
		fail(w, c, CodeBodyTooLarge, msgBodyTooLarge)
		return
	case c.bodyTimedOut.Load():
		fail(w, c, CodeBadRequest, msgBodyTimeout)
		return
	case errors.As(err, &badEncoding):
		u.logTransport(c, err)
		fail(w, c, CodeUpstreamUnreachable, badEncoding.Error())
	case errors.As(err, &eg):
		u.p.opts.Log.Warn("could not reach the vendor", zap.String("request_id", c.id), zap.String("upstream", u.spec.Name),
			zap.String("phase", eg.Phase), zap.String("reason", eg.Reason), zap.Error(eg.Err))
		code := CodeUpstreamUnreachable
		if eg.Timeout {
			code = CodeUpstreamTimeout
		}
		fail(w, c, code, eg.Msg)
	case isDialOrTLS(err):
		u.logTransport(c, err)
		fail(w, c, CodeUpstreamUnreachable, "could not connect to upstream "+quoteName(u.spec.Name))
	case egress.IsTimeout(err):
		u.logTransport(c, err)
		fail(w, c, CodeUpstreamTimeout, "upstream "+quoteName(u.spec.Name)+" did not answer within "+u.spec.Timeout.String()+" (upstreams[].timeout)")
	default:
		u.logTransport(c, err)
		msg := "the connection to upstream " + quoteName(u.spec.Name) + " failed"
		if p := u.spec.Egress.Proxy; p != nil && u.spec.Target.Scheme == "https" {
			msg += " (it runs through the egress proxy " + p.Host + ")"
		}
		fail(w, c, CodeUpstreamUnreachable, msg)
	}
}

func (u *upstream) logTransport(c *call, err error) {
	u.p.opts.Log.Warn("vendor call failed", zap.String("request_id", c.id),
		zap.String("upstream", u.spec.Name), zap.Error(err))
}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isDialOrTLS(err error) bool {
	if isDial(err) {
		return true
	}
	var rec tls.RecordHeaderError
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &rec) || errors.As(err, &alert) || errors.As(err, &verify) ||
		strings.Contains(err.Error(), "tls: ")
}
