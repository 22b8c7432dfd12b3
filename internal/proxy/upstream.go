package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/reply"
	"github.com/keybroker/keybroker/internal/secrets"
	"go.uber.org/zap"
)

// upstream is one vendor: its reverse proxy and its own transport.
type upstream struct {
	spec      Upstream // as configured, defaults applied
	limitKey  string   // the quota's key in the upstream limiter
	slot      callers.Slot
	dialer    *egress.Dialer
	transport *http.Transport
	// trip sends a request to the vendor on transport: no client trace,
	// and the wait for the reply's headers bounded by the upstream's
	// timeout.
	trip noInformational
	rp   *httputil.ReverseProxy
	p    *Proxy

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
		// The wait for the reply's headers is bounded by u.trip, not by
		// the transport (see noInformational).
		u.transport = egress.NewTransport(u.dialer, 0)
	}
	u.trip = noInformational{rt: u.transport, headerTimeout: cfg.Timeout}
	u.tokenPath = cfg.TokenPath
	u.rp = &httputil.ReverseProxy{
		Rewrite:        u.rewrite,
		Transport:      u.trip,
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
//
// It also bounds the wait for the reply's headers (upstreams[].timeout)
// with a timer that cancels the request unless the headers come first.
// The transport's ResponseHeaderTimeout would do the same at a price on
// every call: Go's HTTP/2 request writer then waits for the headers too,
// only to stop its timer, so each reply wakes one more goroutine, often
// on the other processor.
type noInformational struct {
	rt            http.RoundTripper
	headerTimeout time.Duration
}

func (n noInformational) RoundTrip(req *http.Request) (*http.Response, error) {
	var ctx context.Context = untraced{req.Context()}
	if n.headerTimeout <= 0 {
		return n.rt.RoundTrip(req.WithContext(ctx))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(n.headerTimeout, func() { cancel(errHeaderTimeout) })
	resp, err := n.rt.RoundTrip(req.WithContext(ctx))
	if !timer.Stop() {
		// The timer fired: the headers did not come in time.
		if err == nil {
			resp.Body.Close()
		}
		return nil, errHeaderTimeout
	}
	if err != nil {
		cancel(err)
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// errHeaderTimeout is a vendor that sent no reply headers within the
// upstream's timeout: a timeout to egress.IsTimeout (504 upstream_timeout).
var errHeaderTimeout error = headerTimeoutError{}

type headerTimeoutError struct{}

func (headerTimeoutError) Error() string   { return "timeout awaiting response headers" }
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }

// cancelOnClose ends a reply's request context when the reply is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(context.Canceled)
	return err
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
