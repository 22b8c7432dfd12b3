package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

// replayLimit is the largest request body held in memory so the call can be
// retried once after a vendor 401. Larger bodies stream without a retry.
const replayLimit = 64 << 10

// serve runs the request path: hygiene, route, identity, policy, body
// limit, rate limits, audit check, credential, forward.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	c := callFrom(r.Context())
	st := p.state.Load()

	if err := checkForm(r, st.maxHeaderCount); err != nil {
		fail(w, c, CodeBadRequest, err.Error())
		return
	}
	path, err := cleanPath(rawPath(r))
	if err != nil {
		fail(w, c, CodeBadRequest, err.Error())
		return
	}
	name, rest := splitUpstream(path)
	c.rest = rest
	c.rec.Path = rest
	if len(name) <= 64 {
		c.rec.Upstream = name
	}
	up := st.upstreams[name]
	if up != nil {
		c.up = up
		c.rec.Query = audit.RedactQuery(r.URL.RawQuery, up.secretParams...)
	} else {
		c.rec.Query = audit.RedactQuery(r.URL.RawQuery)
	}

	// Identity before the route's existence is revealed: an unknown caller
	// learns nothing about which upstreams exist.
	var slot = up.dropinSlot()
	id, err := st.callers.Identify(r, slot)
	c.rec.Caller, c.rec.CallerAuth = id.Name, id.Auth
	if err != nil {
		fail(w, c, CodeCallerUnauthenticated, "no valid caller identity: send Proxy-Authorization: Bearer <key> or a client certificate")
		return
	}
	if up == nil {
		fail(w, c, CodeUnknownUpstream, "no upstream named "+quoteName(name))
		return
	}

	if d := id.Allow(name, r.Method, rest); d.Allowed {
		c.rec.Policy = "allowed"
	} else if st.reportOnly {
		c.rec.Policy = "would_deny"
		p.opts.Log.Info("policy would deny (report mode)", zap.String("request_id", c.id), zap.String("reason", d.Reason))
	} else {
		c.rec.Policy = "denied"
		fail(w, c, CodeCallerForbidden, d.Reason)
		return
	}

	if r.ContentLength > up.cfg.MaxRequestBytes {
		fail(w, c, CodeBodyTooLarge, "request body over the limit for this upstream")
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = countingBody{ReadCloser: http.MaxBytesReader(w, r.Body, up.cfg.MaxRequestBytes), n: &c.bytesIn}
	}

	if !p.admit(w, r, c, id.Name, id.RateLimit(), up) {
		return
	}
	if err := p.opts.Auditor.Check(); err != nil {
		p.opts.Log.Error("refusing calls: audit trail cannot be written", zap.Error(err))
		fail(w, c, CodeAuditUnavailable, "the audit record cannot be written; no call is forwarded unaudited")
		return
	}
	cred, err := p.opts.Credentials.Get(r.Context(), name)
	if err != nil {
		p.opts.Log.Warn("no usable credential", zap.String("upstream", name), zap.Error(err))
		fail(w, c, CodeCredentialUnavailable, "no usable credential for upstream "+quoteName(name))
		return
	}
	c.cred = cred
	c.rec.Credential = &audit.CredentialRef{Source: cred.Source, Ref: cred.Ref, Version: cred.Version}

	if err := holdBody(r, c); err != nil {
		p.bodyError(w, c, err)
		return
	}
	up.rp.ServeHTTP(w, r)
}

// quota is one limit a call must pass.
type quota struct {
	by  string // "caller" or "upstream", for the audit record
	key string
	lim ratelimit.Limit
	l   Limiter
}

// admit applies the caller's own limit, then the upstream's quota, so that
// one noisy caller waits on its own bucket and cannot starve the others.
// It writes the 429 itself and returns false when the call may not go.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, c *call, caller string, own *config.RateLimit, up *upstream) bool {
	steps := make([]quota, 0, 2)
	if own != nil {
		steps = append(steps, quota{"caller", "caller:" + caller, toLimit(own), p.opts.CallerLimiter})
	}
	steps = append(steps, quota{"upstream", "upstream:" + up.cfg.Name, up.limit, p.opts.UpstreamLimiter})
	for _, s := range steps {
		start := p.opts.Now()
		_, err := s.l.Wait(r.Context(), s.key, s.lim)
		c.rec.RateLimitWaitMS += ms(p.opts.Now().Sub(start))
		if err == nil {
			continue
		}
		c.rec.RateLimitedBy = s.by
		if ref, ok := ratelimit.IsRefused(err); ok {
			setRetryHeaders(w.Header(), ref.RetryAfter, ref.Reset, ref.Limit, 0)
			msg := "the " + s.by + " quota is used up; retry after Retry-After seconds"
			if ref.Paused {
				msg = "the vendor answered 429; calls to this upstream are paused; retry after Retry-After seconds"
			}
			fail(w, c, CodeRateLimited, msg)
			return false
		}
		if r.Context().Err() != nil {
			c.rec.Outcome = audit.OutcomeCancelled
			c.rec.Error = "caller went away while waiting for a rate-limit slot"
			return false
		}
		// The limiter itself failed (Redis down and no fallback): refuse
		// politely rather than send a call that may break the vendor quota.
		p.opts.Log.Error("rate limiter failed", zap.String("key", s.key), zap.Error(err))
		setRetryHeaders(w.Header(), time.Second, 0, 0, 0)
		fail(w, c, CodeRateLimited, "rate limiter unavailable; retry shortly")
		return false
	}
	return true
}

func toLimit(rl *config.RateLimit) ratelimit.Limit {
	l := ratelimit.Limit{Requests: rl.Requests, Per: rl.Per.D(), Burst: rl.Burst}
	if rl.MaxWait != nil {
		l.MaxWait = rl.MaxWait.D()
	}
	return l
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

func (p *Proxy) bodyError(w http.ResponseWriter, c *call, err error) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		fail(w, c, CodeBodyTooLarge, "request body over the limit for this upstream")
		return
	}
	fail(w, c, CodeBadRequest, "could not read the request body")
}

func quoteName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return `"` + s + `"`
}
