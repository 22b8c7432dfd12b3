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
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/oauth"
)

// serveToken is keybroker's own token endpoint for one OAuth upstream
// (RFC 6749 §4.4): an unmodified client sends its caller name as
// client_id and its key as client_secret, and gets a keybroker token bound
// to that caller, its key and this upstream. Replies are in OAuth's shape,
// with Keybroker-Error still set on errors. The request is recorded as the
// event token_issued, not as a call.
func (p *Proxy) serveToken(w http.ResponseWriter, r *http.Request, c *call, st *state, up *upstream) {
	c.unrecorded = true
	c.rec.CallerAuth = callers.AuthNone
	req, rerr := oauth.ReadRequest(r)
	var id callers.Identity
	var key []byte
	if rerr == nil {
		var ok bool
		if id, key, ok = st.callers.ByNameKey(req.ClientID, req.ClientSecret); !ok {
			rerr = &oauth.RequestError{Status: http.StatusUnauthorized, Code: oauth.ErrInvalidClient, Basic: req.Basic,
				Description: "unknown client_id or wrong client_secret (the caller's name and key)"}
		} else if !id.MayUse(up.spec.Name) {
			rerr = &oauth.RequestError{Status: http.StatusBadRequest, Code: "unauthorized_client",
				Description: "caller " + strconv.Quote(id.Name) + " has no allow rule for upstream " + quoteName(up.spec.Name)}
		}
	}
	if rerr != nil {
		if id.Name == "" {
			if retry, over := p.chargeKeyless(r.Context(), r.RemoteAddr, st); over {
				setRetryHeaders(w.Header(), retry, 0, 0, 0)
				w.Header().Set(ErrorHeader, CodeRateLimited)
				oauth.WriteError(w, &oauth.RequestError{Status: http.StatusTooManyRequests, Code: "temporarily_unavailable",
					Description: "too many requests without a valid caller identity from this address; retry after Retry-After seconds"})
				p.tokenRequested(up.spec.Name, "", "rate_limited", "")
				return
			}
		}
		code := CodeBadRequest
		if rerr.Status == http.StatusUnauthorized {
			code = CodeCallerUnauthenticated
		}
		w.Header().Set(ErrorHeader, code)
		oauth.WriteError(w, rerr)
		p.tokenRequested(up.spec.Name, id.Name, rerr.Code, rerr.Description)
		return
	}
	tok, ttl, err := p.opts.Tokens.Issue(r.Context(), oauth.Claims{Caller: id.Name, Upstream: up.spec.Name, Fingerprint: oauth.Fingerprint(key)})
	if err != nil {
		p.opts.Log.Error("keybroker token not issued", zap.String("upstream", up.spec.Name), zap.Error(err))
		w.Header().Set(ErrorHeader, CodeCredentialUnavailable)
		oauth.WriteError(w, &oauth.RequestError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable",
			Description: "the token signing key (oauth.token_signing) cannot be read"})
		p.tokenRequested(up.spec.Name, id.Name, "signing_key_unavailable", "")
		return
	}
	oauth.WriteToken(w, tok, int(ttl/time.Second))
	p.tokenRequested(up.spec.Name, id.Name, "issued", "")
}

// tokenRequested writes the event token_issued (never the secret or the
// token) and counts it.
func (p *Proxy) tokenRequested(upstream, caller, outcome, detail string) {
	if h := p.opts.Hooks.TokenRequested; h != nil {
		h(upstream, outcome)
	}
	ev := audit.Event{Name: "token_issued", Upstream: upstream, Caller: caller, Outcome: outcome, Detail: detail}
	if err := p.opts.Auditor.WriteEvent(ev, p.opts.Now()); err != nil {
		p.opts.Log.Error("audit event not written", zap.String("event", ev.Name), zap.Error(err))
	}
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
