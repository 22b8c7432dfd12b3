package proxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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

// serve runs the request path (check) and forwards the call, or refuses it.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	c := callFrom(r.Context())
	st := p.state.Load()
	up, ref := p.check(w, r, c, st)
	if ref != nil {
		p.refuse(w, r, c, st, ref)
		return
	}
	up.rp.ServeHTTP(w, r)
}

// check is the request path up to forwarding, in order: hygiene, route,
// identity, policy, body limit, rate limits, audit check, credential, body
// hold. It returns the upstream to forward to, or why not.
func (p *Proxy) check(w http.ResponseWriter, r *http.Request, c *call, st *state) (*upstream, *refusal) {
	c.in = r
	if c.hasBody && st.readBodyTimeout > 0 {
		// A body must arrive within read_body_timeout of the request's
		// start; countingBody lifts the deadline once it has all come.
		c.rc = http.NewResponseController(w)
		_ = c.rc.SetReadDeadline(c.start.Add(st.readBodyTimeout))
	}
	if err := checkForm(r, st.maxHeaderCount); err != nil {
		// The refused query is recorded too (bounded, credential values
		// and any key in the request's auth headers redacted).
		var keys [8]string
		c.rec.Query = audit.Bound(audit.RedactQuery(r.URL.RawQuery, nil, presentedKeys(keys[:0], r, callers.Slot{})), audit.MaxRefusedQuery)
		p.chargeForm(r, c, st)
		return nil, &refusal{CodeBadRequest, err.Error()}
	}
	path, err := cleanPath(rawPath(r))
	if err != nil {
		p.chargeForm(r, c, st)
		return nil, &refusal{CodeBadRequest, err.Error()}
	}
	name, rest := splitUpstream(path)
	c.rest = rest
	if len(name) <= 64 {
		c.rec.Upstream = name
	}
	up := st.upstreams[name]
	slot := up.dropinSlot()
	// The audit has the path and the query as the vendor gets them
	// (escapes kept, split as forwarding splits them), credential values
	// redacted; neither ever holds a key the caller presented.
	var keys [8]string
	presented := presentedKeys(keys[:0], r, slot)
	c.query = rawquery.Drop(r.URL.RawQuery, slot.Params...)
	c.rec.Path = audit.Scrub(escapedPath(rest), presented)
	c.rec.Query = audit.RedactQuery(c.query, slot.Params, presented)

	if up != nil && up.tokenPath != "" && rest == up.tokenPath {
		p.serveToken(w, r, c, st, up)
		return nil, &refusal{}
	}

	// Identity before the route's existence is revealed: an unknown caller
	// learns nothing about which upstreams exist.
	id, err := p.identify(r, st, name, slot)
	c.rec.Caller, c.rec.CallerAuth, c.rec.Subject = id.Name, id.Auth, id.Subject
	if errors.Is(err, callers.ErrDropinName) {
		return nil, &refusal{CodeCallerUnauthenticated, callers.DropinNameMessage}
	}
	var unavailable identityUnavailable
	if errors.As(err, &unavailable) {
		return nil, &refusal{CodeIdentityUnavailable, unavailable.reason}
	}
	if err != nil && !errors.Is(err, callers.ErrUnauthenticated) {
		// A keybroker token that does not hold: its reason is the token's
		// own public fact.
		return nil, &refusal{CodeCallerUnauthenticated, err.Error()}
	}
	if err != nil {
		return nil, &refusal{CodeCallerUnauthenticated, identityHint(slot, st.clientCerts)}
	}
	if up == nil {
		return nil, &refusal{CodeUnknownUpstream, "no upstream named " + quoteName(name)}
	}

	if d := id.Allow(name, r.Method, rest); d.Allowed {
		c.rec.Policy = audit.PolicyAllowed
	} else if st.reportOnly {
		c.rec.Policy = audit.PolicyWouldDeny
		p.opts.Log.Info("policy would deny (report mode)", zap.String("request_id", c.id), zap.String("reason", d.Reason))
	} else {
		c.rec.Policy = audit.PolicyDenied
		return nil, &refusal{CodeCallerForbidden, d.Reason}
	}

	if r.ContentLength > up.cfg.MaxRequestBytes {
		return nil, &refusal{CodeBodyTooLarge, msgBodyTooLarge}
	}
	if c.hasBody {
		r.Body = countingBody{ReadCloser: http.MaxBytesReader(w, r.Body, up.cfg.MaxRequestBytes), c: c}
	}

	if ref := p.admit(w, r, c, st, id.Name, up); ref != nil {
		return nil, ref
	}
	if err := p.opts.Auditor.Check(); err != nil {
		p.opts.Log.Error("refusing calls: audit trail cannot be written", zap.Error(err))
		return nil, &refusal{CodeAuditUnavailable, "the audit record cannot be written; no call is forwarded unaudited"}
	}
	cred, err := p.opts.Credentials.Get(r.Context(), name)
	if err != nil {
		p.opts.Log.Warn("no usable credential", zap.String("upstream", name), zap.Error(err))
		if errors.Is(err, secrets.ErrPlaceholder) {
			return nil, &refusal{CodeCredentialUnavailable, "placeholder credential for upstream " + quoteName(name) + ": put the real vendor credential in its source"}
		}
		return nil, &refusal{CodeCredentialUnavailable, "no usable credential for upstream " + quoteName(name)}
	}
	c.rec.Credential = &audit.CredentialRef{Source: cred.Source, Ref: cred.Ref, Version: cred.Version}
	var ref *refusal
	if c.cred, ref = up.vendorToken(r.Context(), cred); ref != nil {
		return nil, ref
	}

	if err := holdBody(r, c); err != nil {
		return nil, bodyRefusal(c, err)
	}
	return up, nil
}

// identify finds who sent r: a keybroker token when the call carries one
// (and no client certificate names a caller), else callers.Identify.
func (p *Proxy) identify(r *http.Request, st *state, name string, slot callers.Slot) (callers.Identity, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		if id, err := st.callers.Identify(r, callers.Slot{}); err == nil && id.Auth == callers.AuthCert {
			return id, nil
		}
	}
	if id, ok, err := p.tokenIdentity(r, st, name, slot); ok {
		return id, err
	}
	if st.jwt != nil {
		if id, ok, err := p.jwtIdentity(r, st, slot); ok {
			return id, err
		}
	}
	return st.callers.Identify(r, slot)
}

// refuse answers a call that keybroker turns down. A call without a named
// caller is first held to the unidentified limits (unidentified.go).
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, c *call, st *state, ref *refusal) {
	if ref.code == "" {
		c.rec.Error = ref.msg
		return
	}
	if c.rec.Caller == "" && p.overUnidentified(w, r, c, st) {
		return
	}
	if c.rec.Caller != "" && chargedToCaller(ref.code) && p.overRefusals(w, r, c, st, ref) {
		return
	}
	fail(w, c, ref.code, ref.msg)
}

// chargeForm names the caller of a request refused for its form, when it
// proved who it is (Proxy-Authorization or a client certificate), so that
// the refusal is charged to that caller's budget and not to the keyless
// limits of its address. A drop-in key is not read here: without a route
// there is no slot to read it from.
func (p *Proxy) chargeForm(r *http.Request, c *call, st *state) {
	if id, err := st.callers.Identify(r, callers.Slot{}); err == nil && id.Name != "" {
		c.rec.Caller, c.rec.CallerAuth = id.Name, id.Auth
	}
}

// quota is one limit a call must pass.
type quota struct {
	by  string // "caller" or "upstream", for the audit record
	key string
	lim ratelimit.Limit
	l   Limiter
}

// admit applies the caller's own limit, then the upstream's quota (the
// caller's share of it, under rate_limit.shares), so that one noisy caller
// waits on its own bucket and cannot starve the others. Retry-After and
// RateLimit-* go on w for a refusal.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, c *call, st *state, caller string, up *upstream) *refusal {
	steps := make([]quota, 0, 2)
	if own, ok := st.callerQuotas[caller]; ok {
		steps = append(steps, quota{"caller", "caller:" + caller, own, p.opts.CallerLimiter})
	}
	ulim := up.cfg.Quota
	ulim.Caller = caller
	steps = append(steps, quota{"upstream", up.limitKey, ulim, p.opts.UpstreamLimiter})
	for _, s := range steps {
		start := p.opts.Now()
		res, ticket, err := s.l.Acquire(r.Context(), s.key, s.lim)
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
				limit = shareLimit(s.lim)
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

// shareLimit is the most of a shared quota lim.Caller can ever hold: its
// reserve and the shared slots, capped by its max.
func shareLimit(lim ratelimit.Limit) int {
	sh := lim.Shares.Of(lim.Caller)
	n := sh.Reserve + lim.Requests - lim.Shares.Reserved()
	if sh.Max > 0 {
		n = min(n, sh.Max)
	}
	return n
}

// quotaHeaders tells a caller of an upstream with shares what it has left
// of the quota (RateLimit-*, IETF draft): its unused reserve and the free
// shared slots, capped by its max.
func quotaHeaders(h http.Header, lim ratelimit.Limit, caller string, res *ratelimit.Result) {
	lim.Caller = caller
	limit := shareLimit(lim)
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

// presentedKeys lists what the caller sent in the places a key can sit:
// Proxy-Authorization, Authorization (decoded for Basic), the upstream's
// drop-in headers and query parameters. None of it is ever written to the
// audit, whether or not it named a caller.
func presentedKeys(out []string, r *http.Request, slot callers.Slot) []string {
	add := func(v string) {
		if v = strings.TrimSpace(v); len(v) >= 6 {
			out = append(out, v)
		}
	}
	addAuth := func(v string) {
		add(v)
		scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !ok {
			return
		}
		add(cred)
		if strings.EqualFold(scheme, "basic") {
			if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred)); err == nil {
				add(string(raw))
				if _, pw, ok := strings.Cut(string(raw), ":"); ok {
					add(pw)
				}
			}
		}
	}
	for _, h := range [...]string{"Proxy-Authorization", "Authorization"} {
		for _, v := range r.Header.Values(h) {
			addAuth(v)
		}
	}
	for _, h := range slot.Headers {
		if h != "Authorization" {
			for _, v := range r.Header.Values(h) {
				addAuth(v)
			}
		}
	}
	if r.URL.RawQuery != "" && len(slot.Params) > 0 {
		q := r.URL.Query()
		for _, p := range slot.Params {
			for _, v := range q[p] {
				add(v)
			}
		}
	}
	return out
}
