package proxy

// keybroker's own OAuth tokens: the drop-in token endpoint that issues
// them (RFC 6749 §4.4: an unmodified OAuth client, its base URL pointed at
// keybroker, sends its caller name and key as client credentials), and
// the verifier that checks them when they come back (callers.Identify).
// This is the one file of the proxy that knows internal/oauth.

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/budget"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/oauth"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

// serveToken is keybroker's own token endpoint for one OAuth upstream
// (RFC 6749 §4.4): an unmodified client sends its caller name as
// client_id and its key as client_secret, and gets a keybroker token bound
// to that caller, its key and this upstream. Replies are in OAuth's shape,
// with Keybroker-Error still set on errors. A request is never a call
// record, and what it writes is bounded as every refusal's is:
//   - without a proven caller (no or a wrong key, a malformed request) it
//     is charged to its address's keyless limits: within them it writes a
//     token_issued event with its error, beyond them it gets 429 and is
//     counted in unidentified_summary;
//   - a known caller's refusals (no allow rule for the upstream, over its
//     own rate_limit) are charged to its refusal budget: an event within
//     it, a count in refusal_summary beyond it;
//   - issuing counts against the caller's own rate_limit, with no wait,
//     and is aggregated: one token_issued per caller and upstream per
//     refusal summary interval, with the count (FlushTokens);
//   - while the trail cannot be written, nothing is issued (503
//     audit_unavailable), as no call is forwarded.
func (p *Proxy) serveToken(w http.ResponseWriter, r *http.Request, c *call, st *state, up *upstream) {
	c.unrecorded = true
	c.rec.CallerAuth = callers.AuthNone
	name := up.spec.Name
	if err := p.opts.Auditor.Check(); err != nil {
		p.opts.Log.Error("refusing tokens: audit trail cannot be written", zap.Error(err))
		p.tokenReply(w, c, CodeAuditUnavailable, &oauth.RequestError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable",
			Description: "the audit record cannot be written; no token is issued unaudited"}, "audit_unavailable")
		return
	}
	req, rerr := oauth.ReadRequest(r)
	var id callers.Identity
	var key []byte
	if rerr == nil {
		var ok bool
		if id, key, ok = st.callers.ByNameKey(req.ClientID, req.ClientSecret); !ok {
			rerr = &oauth.RequestError{Status: http.StatusUnauthorized, Code: oauth.ErrInvalidClient, Basic: req.Basic,
				Description: "unknown client_id or wrong client_secret (the caller's name and key)"}
		}
	}
	if rerr != nil {
		p.tokenKeyless(w, r, c, st, name, rerr)
		return
	}
	c.rec.Caller, c.rec.CallerAuth = id.Name, id.Auth
	if !id.MayUse(name) {
		p.tokenCallerRefused(w, r, c, st, name, CodeBadRequest, &oauth.RequestError{Status: http.StatusBadRequest, Code: "unauthorized_client",
			Description: "caller " + strconv.Quote(id.Name) + " has no allow rule for upstream " + quoteName(name)}, "unauthorized_client")
		return
	}
	if lim, ok := st.callerQuotas[id.Name]; ok {
		// A token is a call's worth of the caller's own limit: no wait, and
		// no slot of the vendor's quota (the vendor is not reached).
		if _, _, err := p.opts.CallerLimiter.Acquire(r.Context(), "caller:"+id.Name, lim.Quota, ratelimit.Call{}); err != nil {
			retry := time.Second
			if ref, ok := ratelimit.IsRefused(err); ok {
				retry = ref.RetryAfter
			}
			setRetryHeaders(w.Header(), retry, 0, 0, 0)
			c.rec.RateLimitedBy = "caller"
			p.tokenCallerRefused(w, r, c, st, name, CodeRateLimited, &oauth.RequestError{Status: http.StatusTooManyRequests, Code: "temporarily_unavailable",
				Description: "the caller's rate_limit is used up; retry after Retry-After seconds"}, "rate_limited")
			return
		}
	}
	tok, ttl, err := p.opts.Tokens.Issue(r.Context(), oauth.Claims{Caller: id.Name, Upstream: name, Fingerprint: oauth.Fingerprint(key)})
	if err != nil {
		p.opts.Log.Error("keybroker token not issued", zap.String("upstream", name), zap.Error(err))
		p.tokenReply(w, c, CodeCredentialUnavailable, &oauth.RequestError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable",
			Description: "the token signing key (oauth.token_signing) cannot be read"}, "signing_key_unavailable")
		p.tokenEvent(name, id.Name, "signing_key_unavailable", "")
		return
	}
	oauth.WriteToken(w, tok, int(ttl/time.Second))
	if h := p.opts.Hooks.TokenRequested; h != nil {
		h(name, "issued")
	}
	p.issued.Count(id.Name+"\x00"+name, budget.Refusal{})
}

// tokenKeyless answers a token request without a proven caller, charged
// to its address's keyless limits.
func (p *Proxy) tokenKeyless(w http.ResponseWriter, r *http.Request, c *call, st *state, upstream string, rerr *oauth.RequestError) {
	if retry, over := p.chargeKeyless(r.Context(), r.RemoteAddr, st); over {
		setRetryHeaders(w.Header(), retry, 0, 0, 0)
		c.rec.RateLimitedBy = "unidentified"
		p.tokenReply(w, c, CodeRateLimited, &oauth.RequestError{Status: http.StatusTooManyRequests, Code: "temporarily_unavailable",
			Description: msgKeylessOver}, "rate_limited")
		return
	}
	code := CodeBadRequest
	if rerr.Status == http.StatusUnauthorized {
		code = CodeCallerUnauthenticated
	}
	p.tokenReply(w, c, code, rerr, rerr.Code)
	p.tokenEvent(upstream, "", rerr.Code, rerr.Description)
}

// tokenCallerRefused answers a known caller's refused token request,
// charged to its refusal budget: an event within it, a count in its
// refusal_summary beyond it.
func (p *Proxy) tokenCallerRefused(w http.ResponseWriter, r *http.Request, c *call, st *state, upstream, code string, rerr *oauth.RequestError, outcome string) {
	p.tokenReply(w, c, code, rerr, outcome)
	caller := c.rec.Caller
	if _, over := p.refusals.Charge(r.Context(), caller, budget.Limits{Each: st.refusals}, budget.Refusal{Code: code, Path: c.rec.Path}); over {
		if h := p.opts.Hooks.RefusalUnrecorded; h != nil {
			h(caller)
		}
		return
	}
	p.tokenEvent(upstream, caller, outcome, rerr.Description)
}

// tokenReply writes an OAuth error with its Keybroker-Error and counts it.
func (p *Proxy) tokenReply(w http.ResponseWriter, c *call, code string, rerr *oauth.RequestError, outcome string) {
	c.code = code
	w.Header().Set(ErrorHeader, code)
	oauth.WriteError(w, rerr)
	if h := p.opts.Hooks.TokenRequested; h != nil {
		h(c.rec.Upstream, outcome)
	}
}

// tokenEvent writes one token_issued event (never the secret or the
// token).
func (p *Proxy) tokenEvent(upstream, caller, outcome, detail string) {
	ev := audit.Event{Name: "token_issued", Upstream: upstream, Caller: caller, Outcome: outcome, Detail: detail}
	if err := p.opts.Auditor.WriteEvent(ev, p.opts.Now()); err != nil {
		p.opts.Log.Error("audit event not written", zap.String("event", ev.Name), zap.Error(err))
	}
}

// FlushTokens writes one token_issued event per caller and upstream that
// were issued tokens since the last flush, with their count.
func (p *Proxy) FlushTokens() {
	p.writeSummaries(p.issued.Flush(), func(s budget.Summary) audit.Event {
		caller, upstream, _ := strings.Cut(s.Party, "\x00")
		return audit.Event{Name: "token_issued", Caller: caller, Upstream: upstream, Outcome: "issued", Count: s.Count,
			Detail: "tokens issued since " + s.Since.UTC().Format(time.RFC3339)}
	}, "keybroker tokens issued were summarised")
}

// TokenIssuer issues and verifies keybroker's own tokens (internal/oauth's
// Issuer).
type TokenIssuer interface {
	Issue(ctx context.Context, c oauth.Claims) (token string, ttl time.Duration, err error)
	Verify(ctx context.Context, tok string) (oauth.Claims, error)
}

// defaultTokens signs with a random key known to this process only, tokens
// living an hour.
func defaultTokens(now func() time.Time) TokenIssuer { return oauth.NewIssuer(nil, time.Hour, now) }

// tokenVerifier is callers.TokenVerifier over keybroker's token issuer.
type tokenVerifier struct{ is TokenIssuer }

func (tokenVerifier) IsToken(v string) bool { return strings.HasPrefix(v, oauth.TokenPrefix) }

func (t tokenVerifier) VerifyToken(ctx context.Context, tok string) (callers.TokenClaims, error) {
	cl, err := t.is.Verify(ctx, tok)
	if err != nil {
		return callers.TokenClaims{}, err
	}
	return callers.TokenClaims{Caller: cl.Caller, Upstream: cl.Upstream, Fingerprint: cl.Fingerprint}, nil
}

func (tokenVerifier) Fingerprint(keySHA256 []byte) string { return oauth.Fingerprint(keySHA256) }
