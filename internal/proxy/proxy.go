// Package proxy is keybroker's request path: request hygiene, the route to
// an upstream, caller identity and policy decisions, rate limits,
// credential injection, forwarding with httputil.ReverseProxy (over the
// connections of internal/egress), the retry after a vendor 401, the
// contract's error replies, and the audit record of every call. The reply
// guard is internal/reply's. It does not read configuration files, talk to Vault or Redis, or
// write files: those arrive through the small interfaces below.
package proxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/budget"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/operations"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/secrets"
)

// Credentials returns the credential to inject into a call, whatever the
// upstream's kind (internal/oauth's Credentials adds an OAuth upstream's
// vendor token).
type Credentials interface {
	// Get returns the credential for upstream. An error that says
	// Unreachable() or Timeout() (a vendor token endpoint) becomes 502 or
	// 504; secrets.ErrPlaceholder and any other error 503.
	Get(ctx context.Context, upstream string) (secrets.Credential, error)
	// Refused is told that the vendor refused used, the credential a call
	// carried (its version, and its token), and returns the credential to
	// send the call once more with; ok false: there is nothing new to try.
	Refused(ctx context.Context, upstream string, used secrets.Credential) (next secrets.Credential, ok bool)
}

// Limiter admits calls under a quota, waiting up to the call's MaxWait.
// An admitted call holds its Ticket until its reply (or error) comes back.
type Limiter interface {
	Acquire(ctx context.Context, key string, q ratelimit.Quota, c ratelimit.Call) (ratelimit.Result, ratelimit.Ticket, error)
	// Pause holds every call under key until until (a vendor said 429).
	Pause(key string, until time.Time)
}

// Auditor writes audit records.
type Auditor interface {
	Write(rec *audit.Record) error
	WriteEvent(ev audit.Event, at time.Time) error
	// Begin writes the line a call leaves before it is forwarded and
	// returns its seq (audit.Writer.Begin). The durable trail writes it as
	// the call's last step before ReverseProxy runs.
	Begin(rec *audit.Record) (seq uint64, err error)
	// Check returns an error while records cannot be written.
	Check() error
}

// Hooks tell metrics what the proxy does. Each is optional (nil: nobody is
// told) and runs on the call, so it must be cheap.
type Hooks struct {
	// CallStarted is told when a call starts, CallFinished when its
	// record is complete (whether or not it is written).
	CallStarted  func()
	CallFinished func(rec *audit.Record)
	// LinkDropped: the reply guard replaced a JSON link field by null.
	LinkDropped func(upstream string)
	// TLSHandshakeFailed: a TLS handshake with a vendor failed.
	TLSHandshakeFailed func(upstream, reason string)
	// VendorTokenFetched: an OAuth upstream's vendor token was fetched
	// (reason first, refresh, renew or prove; result ok, refused, failed,
	// unreachable or timeout).
	VendorTokenFetched func(upstream, reason, result string)
	// TokenRequested: keybroker's own token endpoint answered (outcome
	// issued, or the OAuth error).
	TokenRequested func(upstream, outcome string)
	// RefusalUnrecorded: a known caller's refusal over its budget was
	// counted instead of recorded.
	RefusalUnrecorded func(caller string)
}

// Options are the proxy's collaborators. Credentials and Auditor are
// required.
type Options struct {
	Credentials Credentials
	Auditor     Auditor
	// CallerLimiter keeps callers' own limits (per replica). Default: local
	// token buckets.
	CallerLimiter Limiter
	// UpstreamLimiter keeps vendor quotas as sliding windows (local, or
	// Redis for replicas). Default: a local ratelimit.Window.
	UpstreamLimiter Limiter
	// Hooks are told what the proxy does, for metrics. Default: none.
	Hooks Hooks
	// Log is the operational log. Default: none.
	Log *zap.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// SummaryInterval is how often Run writes the summary of refusals that
	// were over the unidentified limits. Default 1m.
	SummaryInterval time.Duration
	// RefusalSummaryInterval is how often Run writes the summary of known
	// callers' refusals over their budget. Default 1m.
	RefusalSummaryInterval time.Duration
	// Tokens issues and verifies keybroker's own OAuth tokens. Default: a
	// random key known to this process only, tokens living an hour.
	Tokens TokenIssuer
}

// Upstream is one vendor API the proxy serves.
type Upstream struct {
	// Name is also the path prefix: /Name/...
	Name string
	// Target is the vendor's base URL; its path is kept as a prefix.
	Target *url.URL
	// Auth is how the vendor credential is injected. Required.
	Auth Scheme
	// Timeout bounds the wait for the vendor's response headers.
	// Default 30s.
	Timeout time.Duration
	// MaxRequestBytes bounds a request body. Default 10 MiB.
	MaxRequestBytes int64
	// Quota is the vendor's quota; Requests 0 means none (MaxWait still
	// bounds the wait through a pause after a vendor 429).
	Quota ratelimit.Quota
	// MaxWait is how long a call may wait for a slot of Quota.
	MaxWait time.Duration
	// VendorPause is how long to pause after a vendor 429 that carries no
	// Retry-After. Default: the quota's Per, else 5s.
	VendorPause time.Duration
	// RewriteLinks are JSON reply fields holding links to the vendor
	// (dotted object keys), rewritten to keybroker's URL.
	RewriteLinks []string
	// Egress is how the vendor is reached (direct, system roots, by
	// default).
	Egress egress.Settings
	// ProxyCredential names the egress proxy's credential (fields
	// username, password) in Options.Credentials; "": none.
	ProxyCredential string
	// Probe proves a rotated credential (Proxy.Probe); nil: none.
	Probe *Probe
	// TokenPath is where, below /{upstream}, keybroker's own token
	// endpoint answers drop-in OAuth clients (token.go); "": none.
	TokenPath string
	// Operations is the vendor's operation catalogue: each call's
	// operation and tier go to the policy and the audit. nil: none.
	Operations *operations.Catalogue
	// DefaultHeaders are sent when the caller sent none of that name
	// (the huntress-sat preset: the JSON:API media type). Content-Type
	// only on a request with a body.
	DefaultHeaders map[string]string
}

// Probe is a cheap read-only request below the upstream's URL.
type Probe struct {
	Method, Path string
}

// Routes is what the proxy serves, swapped whole by Update on a reload.
type Routes struct {
	Upstreams []Upstream
	Callers   *callers.Registry
	// CallerQuotas are callers' own limits, by caller name (per replica).
	CallerQuotas map[string]CallerLimit
	// ReportOnly forwards calls the policy would refuse, marking them
	// "would_deny" in the audit (policy_mode: report).
	ReportOnly bool
	// MaxHeaderCount bounds request header fields. Default 100.
	MaxHeaderCount int
	// ReadBodyTimeout is how long after a request starts its body must
	// have arrived. Default 60s.
	ReadBodyTimeout time.Duration
	// ClientCerts: the listener verifies client certificates, so the 401
	// message offers one.
	ClientCerts bool
	// Unidentified bounds refusals of calls without a named caller.
	Unidentified UnidentifiedLimits
	// RefusalsPerCaller is each known caller's budget of recorded
	// refusals (per replica). Default DefaultRefusalsPerCaller.
	RefusalsPerCaller ratelimit.Quota
	// JWT verifies the tokens of JWT callers (nil: none configured).
	JWT *jwtauth.Verifier
}

// Proxy is the caller-facing handler.
type Proxy struct {
	opts    Options
	state   atomic.Pointer[state]
	handler http.Handler
	// keyless and refusals are the refusal budgets of requests without a
	// named caller (by source address) and of known callers; issued counts
	// the tokens the token endpoint issued, by caller and upstream.
	keyless, refusals, issued *budget.Budget
	// idPrefix and idCounter make request ids (requestID).
	idPrefix  [8]byte
	idCounter atomic.Uint64
}

// CallerLimit is a caller's own rate_limit: its quota, and how long a
// call may wait for a slot of it.
type CallerLimit struct {
	Quota   ratelimit.Quota
	MaxWait time.Duration
}

type state struct {
	upstreams       map[string]*upstream
	callers         *callers.Registry
	callerQuotas    map[string]CallerLimit
	reportOnly      bool
	maxHeaderCount  int
	readBodyTimeout time.Duration
	unidentified    UnidentifiedLimits
	refusals        ratelimit.Quota
	clientCerts     bool
	verifiers       callers.Verifiers
}

// Defaults of Routes and Upstream fields.
const (
	DefaultReadBodyTimeout = 60 * time.Second
	DefaultMaxHeaderCount  = 100
	DefaultTimeout         = 30 * time.Second
	DefaultMaxRequestBytes = 10 << 20
)

// New returns a proxy serving routes.
func New(routes Routes, opts Options) (*Proxy, error) {
	if opts.Credentials == nil || opts.Auditor == nil {
		return nil, errors.New("proxy: Credentials and Auditor are required")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CallerLimiter == nil {
		opts.CallerLimiter = ratelimit.NewLocal(opts.Now)
	}
	if opts.UpstreamLimiter == nil {
		opts.UpstreamLimiter = ratelimit.NewWindow(opts.Now, 0)
	}
	if opts.SummaryInterval <= 0 {
		opts.SummaryInterval = time.Minute
	}
	if opts.RefusalSummaryInterval <= 0 {
		opts.RefusalSummaryInterval = time.Minute
	}
	if opts.Tokens == nil {
		opts.Tokens = defaultTokens(opts.Now)
	}
	gate := ratelimit.NewLocal(opts.Now)
	p := &Proxy{opts: opts, keyless: budget.New("unidentified", gate, opts.Now), refusals: budget.New("refusals", gate, opts.Now),
		issued: budget.New("issued", gate, opts.Now)}
	_, _ = rand.Read(p.idPrefix[:])
	if err := p.Update(routes); err != nil {
		return nil, err
	}
	// Every request takes the same path: the upstream is the first path
	// segment, decided in check after the path is cleaned, so no router.
	p.handler = p.begin(p.recoverer(http.HandlerFunc(p.serve)))
	return p, nil
}

// Update swaps in new routes atomically: calls already running finish on
// the routes they started with. Upstreams whose URL and timeout did not
// change keep their connection pools.
func (p *Proxy) Update(routes Routes) error {
	if routes.Callers == nil {
		return errors.New("proxy: Routes.Callers is required")
	}
	if routes.MaxHeaderCount <= 0 {
		routes.MaxHeaderCount = DefaultMaxHeaderCount
	}
	if routes.ReadBodyTimeout <= 0 {
		routes.ReadBodyTimeout = DefaultReadBodyTimeout
	}
	if routes.Unidentified.PerSource.Requests <= 0 {
		routes.Unidentified.PerSource = DefaultUnidentifiedPerSource
	}
	if routes.Unidentified.Total.Requests <= 0 {
		routes.Unidentified.Total = DefaultUnidentifiedTotal
	}
	if routes.RefusalsPerCaller.Requests <= 0 {
		routes.RefusalsPerCaller = DefaultRefusalsPerCaller
	}
	old := p.state.Load()
	st := &state{
		upstreams:       map[string]*upstream{},
		callers:         routes.Callers,
		callerQuotas:    routes.CallerQuotas,
		reportOnly:      routes.ReportOnly,
		maxHeaderCount:  routes.MaxHeaderCount,
		readBodyTimeout: routes.ReadBodyTimeout,
		unidentified:    routes.Unidentified,
		refusals:        routes.RefusalsPerCaller,
		clientCerts:     routes.ClientCerts,
		verifiers:       p.verifiers(routes.JWT),
	}
	for _, u := range routes.Upstreams {
		if u.Target == nil || u.Auth == nil {
			return fmt.Errorf("proxy: upstream %s needs a Target and an Auth scheme", u.Name)
		}
		if u.Timeout <= 0 {
			u.Timeout = DefaultTimeout
		}
		if u.MaxRequestBytes <= 0 {
			u.MaxRequestBytes = DefaultMaxRequestBytes
		}
		var prev *upstream
		if old != nil {
			prev = old.upstreams[u.Name]
		}
		if prev != nil && prev.spec.Quota.Shares != nil && u.Quota.Shares != nil && reflect.DeepEqual(prev.spec.Quota.Shares, u.Quota.Shares) {
			// The same split: the limiter keeps its window as it is.
			u.Quota.Shares = prev.spec.Quota.Shares
		}
		st.upstreams[u.Name] = p.newUpstream(u, prev)
	}
	p.state.Store(st)
	if old != nil {
		for name, u := range old.upstreams {
			n := st.upstreams[name]
			if n == nil || n.transport != u.transport {
				u.transport.CloseIdleConnections()
			}
		}
	}
	return nil
}

// ServeHTTP serves one caller request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.handler.ServeHTTP(w, r)
}

// begin starts the call: request id, record, recorder, and the audit record
// written when the call ends, whatever way it ends.
func (p *Proxy) begin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{id: p.requestID(r), start: p.opts.Now()}
		c.rec = audit.Record{
			Type:       audit.TypeCall,
			Time:       audit.Time(c.start),
			RequestID:  c.id,
			RemoteAddr: r.RemoteAddr,
			Method:     r.Method,
		}
		c.hasBody = r.Body != nil && r.Body != http.NoBody && (r.ContentLength != 0 || len(r.TransferEncoding) > 0)
		w.Header().Set("X-Request-Id", c.id)
		rw := &recorder{ResponseWriter: w}
		if p.opts.Hooks.CallStarted != nil {
			p.opts.Hooks.CallStarted()
		}
		defer p.finish(c, rw, r)
		next.ServeHTTP(rw, r.WithContext(withCall(r.Context(), c)))
		c.completed = true
		// The reply is complete: send it now rather than after the audit
		// record is written. The record is written before this handler
		// returns either way, and after the vendor was reached either way
		// (the audit's writability is checked before forwarding), so
		// nothing is weakened; the caller just stops waiting for a write(2)
		// it has no part in. Only a reply of known length is flushed early:
		// one without would be switched to chunked encoding.
		if rw.status != 0 && rw.Header().Get("Content-Length") != "" {
			rw.Flush()
		}
	})
}

// recoverer turns a panic into a 500 internal_error, logging where it
// happened but not the panic's value (it could hold anything).
// http.ErrAbortHandler, which ReverseProxy uses to cut a broken stream, is
// passed on so that the server drops the connection.
func (p *Proxy) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			c := callFrom(r.Context())
			p.opts.Log.Error("panic serving a call", zap.String("request_id", c.id),
				zap.String("panic_type", fmt.Sprintf("%T", v)), zap.StackSkip("stack", 1))
			if rw, ok := w.(*recorder); !ok || rw.status == 0 {
				fail(w, c, CodeInternal, "internal error; see the operational log")
			}
			c.completed = true
		}()
		next.ServeHTTP(w, r)
	})
}

func (p *Proxy) finish(c *call, rw *recorder, r *http.Request) {
	rec := &c.rec
	rec.Status = rw.status
	rec.BytesOut = rw.bytes
	rec.BytesIn = c.bytesIn.Load()
	rec.DurationMS = ms(p.opts.Now().Sub(c.start))
	rec.Outcome = outcome(c, r.Context().Err())
	// A call that ends before its reply came back (refused after it was
	// admitted, or cut off) gives its quota slot back, or holds it for
	// the window if it was sent.
	c.ticket.Release(c.sent)
	if c.unrecorded {
		// Counted in the unidentified summary instead.
	} else if err := p.opts.Auditor.Write(rec); err != nil {
		p.opts.Log.Error("audit record not written", zap.String("request_id", c.id), zap.Error(err))
	}
	if p.opts.Hooks.CallFinished != nil {
		p.opts.Hooks.CallFinished(rec)
	}
}

// outcome decides a finished call's outcome: the one place that does. A
// refusal with a 4xx (or 429) code is refused; a caller that went away is
// cancelled (status 499 if it had none); a broken reply or a 5xx code is
// failed; a call the vendor answered is forwarded.
func outcome(c *call, ctxErr error) string {
	rec := &c.rec
	status := errorStatus[c.code]
	refused := c.code != "" && (status < 500 || status == http.StatusTooManyRequests)
	switch {
	case ctxErr != nil && !refused:
		if rec.Status == 0 || rec.Status == http.StatusBadGateway {
			rec.Status = 499 // nginx's "client closed request"
		}
		if rec.Error == "" {
			rec.Error = "caller went away"
		}
		return audit.OutcomeCancelled
	case !c.completed:
		rec.Error = "reply aborted: the vendor's stream broke or the caller went away"
		return audit.OutcomeFailed
	case refused:
		return audit.OutcomeRefused
	case c.code != "":
		return audit.OutcomeFailed
	case c.reached:
		return audit.OutcomeForwarded
	}
	return ""
}
