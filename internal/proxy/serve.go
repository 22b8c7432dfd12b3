package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/rawquery"
	"github.com/keybroker/keybroker/internal/secrets"
)

// replayLimit is the largest request body held in memory so the call can be
// retried once after a vendor 401. Larger bodies stream without a retry.
const replayLimit = 64 << 10

// refusal is why keybroker does not forward a call: a code of the error
// contract and a message for the caller. A refusal with no code means the
// caller went away; nobody is left to answer.
type refusal struct {
	code, msg string
}

// Messages used in more than one place.
const (
	msgBodyTooLarge = "request body over the limit for this upstream"
	msgBodyTimeout  = "the request body did not arrive within server.read_body_timeout"
)

// serve routes a request and serves it: keybroker's own token endpoint
// (token.go) or a call, which it forwards or refuses.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	c := callFrom(r.Context())
	st := p.state.Load()
	up, ref := p.route(w, r, c, st)
	if ref == nil && up != nil && up.tokenPath != "" && c.rest == up.tokenPath {
		p.serveToken(w, r, c, st, up)
		return
	}
	if ref == nil {
		ref = p.check(w, r, c, st, up)
	}
	if ref != nil {
		p.refuse(w, r, c, st, ref)
		return
	}
	up.rp.ServeHTTP(w, r)
}

// route is the request's hygiene and its route: it refuses a request of
// a form keybroker never forwards, and finds the upstream named by the
// first path segment (nil: none of that name). The audit record gets the
// path and query as the vendor would get them.
func (p *Proxy) route(w http.ResponseWriter, r *http.Request, c *call, st *state) (*upstream, *refusal) {
	c.in = r
	if c.hasBody && st.readBodyTimeout > 0 {
		// A body must arrive within read_body_timeout of the request's
		// start; countingBody lifts the deadline once it has all come.
		c.bodyDeadline = http.NewResponseController(w)
		_ = c.bodyDeadline.SetReadDeadline(c.start.Add(st.readBodyTimeout))
	}
	if err := checkForm(r, st.maxHeaderCount); err != nil {
		// The refused query is recorded too (bounded, credential values
		// and any key in the request's auth headers redacted).
		c.presented = callers.Present(r, callers.Slot{}, c.keys[:0])
		c.rec.Query = audit.Bound(audit.RedactQuery(r.URL.RawQuery, nil, c.presented.Keys), audit.MaxRefusedQuery)
		p.chargeForm(c, st)
		return nil, &refusal{CodeBadRequest, err.Error()}
	}
	path, err := cleanPath(rawPath(r))
	if err != nil {
		c.presented = callers.Present(r, callers.Slot{}, c.keys[:0])
		p.chargeForm(c, st)
		return nil, &refusal{CodeBadRequest, err.Error()}
	}
	name, rest := splitUpstream(path)
	c.name, c.rest = name, rest
	if len(name) <= 64 {
		c.rec.Upstream = name
	}
	up := st.upstreams[name]
	slot := up.dropinSlot()
	// The audit has the path and the query as the vendor gets them
	// (escapes kept, split as forwarding splits them), credential values
	// redacted; neither ever holds a key the caller presented.
	c.presented = callers.Present(r, slot, c.keys[:0])
	c.query = rawquery.Drop(r.URL.RawQuery, slot.Params...)
	c.rec.Path = audit.Scrub(escapedPath(rest), c.presented.Keys)
	c.rec.Query = audit.RedactQuery(c.query, slot.Params, c.presented.Keys)
	return up, nil
}

// check is a call's path up to forwarding, in order: identity, policy,
// body limit, rate limits, audit check, credential, body hold, begin line. It returns
// why the call is not forwarded to up, or nil.
func (p *Proxy) check(w http.ResponseWriter, r *http.Request, c *call, st *state, up *upstream) *refusal {
	name := c.name
	// Identity before the route's existence is revealed: an unknown caller
	// learns nothing about which upstreams exist.
	id, err := st.callers.Identify(c.presented, name, st.verifiers)
	c.rec.Caller, c.rec.CallerAuth, c.rec.Subject = id.Name, id.Auth, id.Subject
	var unavailable *callers.UnavailableError
	switch {
	case err == nil:
	case errors.Is(err, callers.ErrDropinName):
		return &refusal{CodeCallerUnauthenticated, callers.DropinNameMessage}
	case errors.As(err, &unavailable):
		return &refusal{CodeIdentityUnavailable, unavailable.Reason}
	case errors.Is(err, callers.ErrUnauthenticated):
		return &refusal{CodeCallerUnauthenticated, c.presented.Hint(st.clientCerts)}
	default:
		// A token that does not hold: its reason is the token's own
		// public fact.
		return &refusal{CodeCallerUnauthenticated, err.Error()}
	}
	if up == nil {
		return &refusal{CodeUnknownUpstream, "no upstream named " + quoteName(name)}
	}

	act := callers.Action{Upstream: name, Method: r.Method, Path: c.rest}
	if op := up.spec.Operations.Match(r.Method, c.rest); op != nil {
		act.Operation, act.Tier = op.Name, string(op.Tier)
		c.rec.Operation, c.rec.Tier = act.Operation, act.Tier
	}
	if d := id.Allow(act); d.Allowed {
		c.rec.Policy = audit.PolicyAllowed
	} else if st.reportOnly {
		c.rec.Policy = audit.PolicyWouldDeny
		p.opts.Log.Info("policy would deny (report mode)", zap.String("request_id", c.id), zap.String("reason", d.Reason))
	} else {
		c.rec.Policy = audit.PolicyDenied
		return &refusal{CodeCallerForbidden, d.Reason}
	}

	if r.ContentLength > up.spec.MaxRequestBytes {
		return &refusal{CodeBodyTooLarge, msgBodyTooLarge}
	}
	if c.hasBody {
		r.Body = countingBody{ReadCloser: http.MaxBytesReader(w, r.Body, up.spec.MaxRequestBytes), c: c}
	}

	if ref := p.admit(w, r, c, st, id.Name, up); ref != nil {
		return ref
	}
	if err := p.opts.Auditor.Check(); err != nil {
		return p.auditRefusal(err)
	}
	cred, err := p.opts.Credentials.Get(r.Context(), name)
	if err != nil {
		return p.credentialRefusal(r.Context(), name, err)
	}
	c.rec.Credential = &audit.CredentialRef{Source: cred.Source, Ref: cred.Ref, Version: cred.Version}
	c.cred = cred

	if err := holdBody(r, c); err != nil {
		return bodyRefusal(c, err)
	}
	// The call's last step before it leaves: its begin line, so that the
	// trail names it whatever ends keybroker while it is at the vendor.
	seq, err := p.opts.Auditor.Begin(&c.rec)
	c.rec.BeginSeq = seq
	if err != nil {
		return p.auditRefusal(err)
	}
	return nil
}

// auditRefusal refuses a call whose audit cannot be written.
func (p *Proxy) auditRefusal(err error) *refusal {
	p.opts.Log.Error("refusing calls: audit trail cannot be written", zap.Error(err))
	return &refusal{CodeAuditUnavailable, "the audit record cannot be written; no call is forwarded unaudited"}
}

// refuse answers a call that keybroker turns down, first charging it to
// its refusal budget (budgets.go).
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, c *call, st *state, ref *refusal) {
	if ref.code == "" {
		c.rec.Error = ref.msg
		return
	}
	if p.overBudget(w, r, c, st, ref) {
		return
	}
	fail(w, c, ref.code, ref.msg)
}

// chargeForm names the caller of a request refused for its form, when it
// proved who it is (Proxy-Authorization or a client certificate), so that
// the refusal is charged to that caller's budget and not to the keyless
// limits of its address. A drop-in key is not read here: without a route
// there is no slot to read it from.
func (p *Proxy) chargeForm(c *call, st *state) {
	if id, err := st.callers.Identify(c.presented, "", callers.Verifiers{}); err == nil && id.Name != "" {
		c.rec.Caller, c.rec.CallerAuth = id.Name, id.Auth
	}
}

// reachError is an error that says whether the far side could not be
// reached or answered too late (a vendor token endpoint's, from
// Credentials.Get).
type reachError interface {
	error
	Unreachable() bool
	Timeout() bool
}

// credentialRefusal says why there is no credential to inject: a
// placeholder, a vendor token endpoint that cannot be reached (502), that
// did not answer in time (504) or that failed or refused the client
// credential (503), or no usable credential (503).
func (p *Proxy) credentialRefusal(ctx context.Context, name string, err error) *refusal {
	var re reachError
	switch {
	case ctx.Err() != nil:
		return &refusal{msg: "caller went away while the credential was fetched"}
	case errors.Is(err, secrets.ErrPlaceholder):
		p.opts.Log.Warn("no usable credential", zap.String("upstream", name), zap.Error(err))
		return &refusal{CodeCredentialUnavailable, "placeholder credential for upstream " + quoteName(name) + ": put the real vendor credential in its source"}
	case errors.As(err, &re):
		code := CodeCredentialUnavailable
		switch {
		case re.Unreachable():
			code = CodeUpstreamUnreachable
		case re.Timeout():
			code = CodeUpstreamTimeout
		}
		return &refusal{code, "no vendor token: " + re.Error()}
	}
	p.opts.Log.Warn("no usable credential", zap.String("upstream", name), zap.Error(err))
	return &refusal{CodeCredentialUnavailable, "no usable credential for upstream " + quoteName(name)}
}

// quota is one limit a call must pass.
type quota struct {
	by   string // "caller" or "upstream", for the audit record
	key  string
	lim  ratelimit.Quota
	call ratelimit.Call
	l    Limiter
}

// admit applies the caller's own limit, then the upstream's quota (the
// caller's share of it, under rate_limit.shares), so that one noisy caller
// waits on its own bucket and cannot starve the others. Retry-After and
// RateLimit-* go on w for a refusal.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, c *call, st *state, caller string, up *upstream) *refusal {
	steps := make([]quota, 0, 2)
	if own, ok := st.callerQuotas[caller]; ok {
		steps = append(steps, quota{"caller", "caller:" + caller, own.Quota, ratelimit.Call{MaxWait: own.MaxWait}, p.opts.CallerLimiter})
	}
	steps = append(steps, quota{"upstream", up.limitKey, up.spec.Quota, ratelimit.Call{MaxWait: up.spec.MaxWait, Caller: caller}, p.opts.UpstreamLimiter})
	for _, s := range steps {
		start := p.opts.Now()
		res, ticket, err := s.l.Acquire(r.Context(), s.key, s.lim, s.call)
		c.rec.RateLimitWaitMS += ms(p.opts.Now().Sub(start))
		if err == nil {
			if s.by == "upstream" {
				c.ticket = ticket
				if s.lim.Shares != nil {
					q := res // on the heap only for an upstream with shares
					c.quota = &q
				}
			}
			continue
		}
		c.rec.RateLimitedBy = s.by
		if ref, ok := ratelimit.IsRefused(err); ok {
			limit := ref.Limit
			if s.lim.Shares != nil {
				limit = shareLimit(s.lim, s.call.Caller)
			}
			setRetryHeaders(w.Header(), ref.RetryAfter, ref.Reset, limit, 0)
			if s.lim.Requests > 0 && s.lim.Per > 0 {
				// The window, as the IETF draft spells it: 60;w=60.
				w.Header().Set("RateLimit-Policy", strconv.Itoa(limit)+";w="+strconv.Itoa(ceilSeconds(s.lim.Per)))
			}
			switch {
			case ref.Paused:
				return &refusal{CodeRateLimited, "the vendor answered 429; calls to this upstream are paused; retry after Retry-After seconds"}
			case ref.Share:
				c.rec.RateLimitedBy = "share"
				return &refusal{CodeRateLimited, fmt.Sprintf("caller %s holds its max of %d slots of the upstream quota (rate_limit.shares); retry after Retry-After seconds",
					quoteName(caller), s.lim.Shares.Of(caller).Max)}
			case s.lim.Shares != nil && s.by == "upstream":
				return &refusal{CodeRateLimited, "the upstream quota has no slot free for this caller (no reserve left, no shared slot); retry after Retry-After seconds"}
			}
			return &refusal{CodeRateLimited, "the " + s.by + " quota is used up; retry after Retry-After seconds"}
		}
		if r.Context().Err() != nil {
			return &refusal{msg: "caller went away while waiting for a rate-limit slot"}
		}
		// The limiter itself failed (Redis down and no fallback): refuse
		// politely rather than send a call that may break the vendor quota.
		p.opts.Log.Error("rate limiter failed", zap.String("key", s.key), zap.Error(err))
		setRetryHeaders(w.Header(), time.Second, 0, 0, 0)
		return &refusal{CodeRateLimited, "rate limiter unavailable; retry shortly"}
	}
	return nil
}

// shareLimit is the most of a shared quota caller can ever hold: its
// reserve and the shared slots, capped by its max.
func shareLimit(lim ratelimit.Quota, caller string) int {
	sh := lim.Shares.Of(caller)
	n := sh.Reserve + lim.Requests - lim.Shares.Reserved()
	if sh.Max > 0 {
		n = min(n, sh.Max)
	}
	return n
}

// quotaHeaders tells a caller of an upstream with shares what it has left
// of the quota (RateLimit-*, IETF draft): its unused reserve and the free
// shared slots, capped by its max.
func quotaHeaders(h http.Header, lim ratelimit.Quota, caller string, res *ratelimit.Result) {
	limit := shareLimit(lim, caller)
	h.Set("RateLimit-Limit", strconv.Itoa(limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(res.Remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(res.Reset)))
	h.Set("RateLimit-Policy", strconv.Itoa(limit)+";w="+strconv.Itoa(ceilSeconds(lim.Per)))
}

// holdBody reads a small request body into memory so it can be replayed
// after a vendor 401. A body over replayLimit streams as it comes and is not
// replayable.
func holdBody(r *http.Request, c *call) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		c.replayable = true
		return nil
	}
	if r.ContentLength > replayLimit {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, replayLimit+1))
	if err != nil {
		return err
	}
	if len(buf) <= replayLimit {
		r.Body.Close()
		c.body, c.replayable = buf, true
		r.Body = io.NopCloser(bytes.NewReader(buf))
		r.ContentLength = int64(len(buf))
		return nil
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	return nil
}

// bodyRefusal says why a request body could not be read.
func bodyRefusal(c *call, err error) *refusal {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return &refusal{CodeBodyTooLarge, msgBodyTooLarge}
	case c.bodyTimedOut.Load():
		return &refusal{CodeBadRequest, msgBodyTimeout}
	default:
		return &refusal{CodeBadRequest, "could not read the request body"}
	}
}

func quoteName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return `"` + s + `"`
}

// escapedPath is the path as it goes on the wire: net/http escapes the
// forwarded path the same way (RawPath is cleared in rewrite).
func escapedPath(p string) string {
	return (&url.URL{Path: p}).EscapedPath()
}
