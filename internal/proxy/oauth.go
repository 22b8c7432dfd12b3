package proxy

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/oauth"
	"github.com/keybroker/keybroker/internal/secrets"
)

// OAuth2 upstreams: the vendor token, fetched with the client-credentials
// grant (internal/oauth keeps it), goes into each call as a Bearer; and
// keybroker's own token endpoint lets an unmodified OAuth client (its base
// URL pointed at keybroker) get a keybroker token with its caller name and
// key, which then identifies it as its key would.

// OAuth is an upstream whose vendor issues tokens with the OAuth2
// client-credentials grant (its credential has client_id and
// client_secret).
type OAuth struct {
	TokenURL string
	Scopes   []string
	// Basic sends the client credentials as HTTP Basic, else in the body.
	Basic bool
	// DropinPath is where, below /{upstream}, keybroker's own token
	// endpoint answers drop-in clients ("": none).
	DropinPath string
}

// DefaultTokenTTL is the lifetime of keybroker's own tokens.
const DefaultTokenTTL = time.Hour

// BearerToken is the auth scheme of an OAuth2 upstream: the vendor token
// as Authorization: Bearer. A caller's own key or keybroker token goes in
// the same header.
func BearerToken() Scheme { return bearerScheme{} }

type bearerScheme struct{}

func (bearerScheme) Fields() []string {
	return []string{oauth.FieldClientID, oauth.FieldClientSecret}
}

func (bearerScheme) Inject(out *http.Request, c secrets.Credential) {
	t, _ := c.Field(oauth.FieldAccessToken)
	out.Header["Authorization"] = []string{"Bearer " + t.Reveal()}
}

func (bearerScheme) Slot() callers.Slot { return callers.Slot{Headers: []string{"Authorization"}} }

func (bearerScheme) Injected(c secrets.Credential) []string {
	t, _ := c.Field(oauth.FieldAccessToken)
	s, _ := c.Field(oauth.FieldClientSecret)
	return []string{t.Reveal(), s.Reveal()}
}

// TokenObserver, when the Observer implements it, counts vendor token
// fetches (by reason and result) and keybroker's token requests (by
// outcome).
type TokenObserver interface {
	VendorTokenFetched(upstream, reason, result string)
	TokenRequested(upstream, outcome string)
}

// newVendorTokens makes the token keeper of an OAuth upstream: its token
// endpoint is reached the way the vendor is (egress proxy, CA), never
// following a redirect.
func (p *Proxy) newVendorTokens(cfg Upstream) *oauth.VendorTokens {
	o := cfg.OAuth
	target := *cfg.Target
	if u, err := target.Parse(o.TokenURL); err == nil {
		target = *u
	}
	dcfg := cfg
	dcfg.Target = &target
	d := NewDialer(dcfg, p.opts.Credentials)
	client := &http.Client{
		Transport:     egress.NewTransport(d, cfg.Timeout),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return oauth.NewVendorTokens(oauth.VendorConfig{
		Upstream: cfg.Name, TokenURL: &target, Scopes: o.Scopes, Basic: o.Basic, Client: client,
		Timeout: cfg.Timeout, Now: p.opts.Now,
		Credential: func(ctx context.Context) (secrets.Credential, error) {
			return p.opts.Credentials.Get(ctx, cfg.Name)
		},
		OnFetch: p.tokenFetched,
	})
}

// sameOAuth reports whether an upstream's token keeper can be kept across
// a reload.
func sameOAuth(a, b Upstream) bool {
	if a.OAuth == nil || b.OAuth == nil {
		return false
	}
	x, y := *a.OAuth, *b.OAuth
	return x.TokenURL == y.TokenURL && slices.Equal(x.Scopes, y.Scopes) && x.Basic == y.Basic &&
		a.transportKey() == b.transportKey()
}

// tokenFetched counts a vendor token fetch, and writes an event for a
// credential version's first token and for a failure after success (and
// the recovery): never the token.
func (p *Proxy) tokenFetched(f oauth.Fetch) {
	result := "ok"
	if f.Err != nil {
		result = [...]string{"", "refused", "failed", "unreachable", "timeout"}[f.Err.Kind]
	}
	if o, ok := p.opts.Observer.(TokenObserver); ok {
		o.VendorTokenFetched(f.Upstream, f.Reason, result)
	}
	ev := audit.Event{Upstream: f.Upstream, Source: f.Cred.Source, Ref: f.Cred.Ref, Version: f.Cred.Version}
	switch {
	case f.Err != nil && f.Changed:
		ev.Name, ev.Status, ev.Detail = "token_fetch_failed", f.Err.Status, f.Err.Msg
		p.opts.Log.Warn("vendor token fetch failed", zap.String("upstream", f.Upstream), zap.String("reason", f.Reason),
			zap.String("error", f.Err.Msg))
	case f.Err == nil && (f.Reason == oauth.ReasonFirst || f.Changed):
		ev.Name, ev.Detail = "token_fetched", "vendor token valid until "+f.Expires.UTC().Format(time.RFC3339)
		if f.Changed {
			ev.Detail += " (the token endpoint answers again)"
		}
	default:
		return
	}
	if err := p.opts.Auditor.WriteEvent(ev, p.opts.Now()); err != nil {
		p.opts.Log.Error("audit event not written", zap.String("event", ev.Name), zap.Error(err))
	}
}

// vendorToken adds the upstream's vendor token to cred, or says why there
// is none: the token endpoint refused the client credentials (503), failed
// (503), could not be reached (502) or did not answer in time (504).
func (u *upstream) vendorToken(ctx context.Context, cred secrets.Credential) (secrets.Credential, *refusal) {
	if u.tokens == nil {
		return cred, nil
	}
	tc, err := u.tokens.Token(ctx, cred)
	if err == nil {
		return tc, nil
	}
	var fe *oauth.FetchError
	if !errors.As(err, &fe) {
		return cred, &refusal{CodeCredentialUnavailable, "no vendor token for upstream " + quoteName(u.cfg.Name)}
	}
	if ctx.Err() != nil {
		return cred, &refusal{msg: "caller went away while the vendor token was fetched"}
	}
	code := CodeCredentialUnavailable
	switch fe.Kind {
	case oauth.Unreachable:
		code = CodeUpstreamUnreachable
	case oauth.Timeout:
		code = CodeUpstreamTimeout
	}
	return cred, &refusal{code, "no vendor token: " + fe.Msg}
}

// tokenIdentity identifies a call that carries a keybroker token, in
// Proxy-Authorization or the upstream's header slots (never in a query).
// ok is false when the call carries none; err says why one is refused.
func (p *Proxy) tokenIdentity(r *http.Request, st *state, name string, slot callers.Slot) (callers.Identity, bool, error) {
	tok := bearerToken(r, slot, isKeybrokerToken)
	if tok == "" {
		return callers.Identity{}, false, nil
	}
	none := callers.Identity{Auth: callers.AuthNone}
	cl, err := p.opts.Issuer.Verify(r.Context(), tok)
	if err != nil {
		return none, true, err
	}
	if cl.Upstream != name {
		return none, true, oauth.ErrWrongTarget
	}
	id, key, ok := st.callers.ByName(cl.Caller)
	if !ok || oauth.Fingerprint(key) != cl.Fingerprint {
		return none, true, errTokenRevoked
	}
	return id, true, nil
}

func isKeybrokerToken(v string) bool { return strings.HasPrefix(v, oauth.TokenPrefix) }

var errTokenRevoked = errors.New("keybroker token revoked: its caller's key changed or the caller was removed; fetch a new one")

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
		} else if !id.MayUse(up.cfg.Name) {
			rerr = &oauth.RequestError{Status: http.StatusBadRequest, Code: "unauthorized_client",
				Description: "caller " + strconv.Quote(id.Name) + " has no allow rule for upstream " + quoteName(up.cfg.Name)}
		}
	}
	if rerr != nil {
		if id.Name == "" {
			if retry, over := p.unidentifiedOver(r, st); over {
				setRetryHeaders(w.Header(), retry, 0, 0, 0)
				w.Header().Set(ErrorHeader, CodeRateLimited)
				oauth.WriteError(w, &oauth.RequestError{Status: http.StatusTooManyRequests, Code: "temporarily_unavailable",
					Description: "too many requests without a valid caller identity from this address; retry after Retry-After seconds"})
				p.tokenRequested(up.cfg.Name, "", "rate_limited", "")
				return
			}
		}
		code := CodeBadRequest
		if rerr.Status == http.StatusUnauthorized {
			code = CodeCallerUnauthenticated
		}
		w.Header().Set(ErrorHeader, code)
		oauth.WriteError(w, rerr)
		p.tokenRequested(up.cfg.Name, id.Name, rerr.Code, rerr.Description)
		return
	}
	tok, ttl, err := p.opts.Issuer.Issue(r.Context(), oauth.Claims{Caller: id.Name, Upstream: up.cfg.Name, Fingerprint: oauth.Fingerprint(key)})
	if err != nil {
		p.opts.Log.Error("keybroker token not issued", zap.String("upstream", up.cfg.Name), zap.Error(err))
		w.Header().Set(ErrorHeader, CodeCredentialUnavailable)
		oauth.WriteError(w, &oauth.RequestError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable",
			Description: "the token signing key (oauth.token_signing) cannot be read"})
		p.tokenRequested(up.cfg.Name, id.Name, "signing_key_unavailable", "")
		return
	}
	oauth.WriteToken(w, tok, int(ttl/time.Second))
	p.tokenRequested(up.cfg.Name, id.Name, "issued", "")
}

// tokenRequested writes the event token_issued (never the secret or the
// token) and counts it.
func (p *Proxy) tokenRequested(upstream, caller, outcome, detail string) {
	if o, ok := p.opts.Observer.(TokenObserver); ok {
		o.TokenRequested(upstream, outcome)
	}
	ev := audit.Event{Name: "token_issued", Upstream: upstream, Caller: caller, Outcome: outcome, Detail: detail}
	if err := p.opts.Auditor.WriteEvent(ev, p.opts.Now()); err != nil {
		p.opts.Log.Error("audit event not written", zap.String("event", ev.Name), zap.Error(err))
	}
}

// VendorTokenFailures returns, per OAuth upstream whose last vendor token
// request failed, why (it names the token endpoint, never a value).
func (p *Proxy) VendorTokenFailures() map[string]string {
	out := map[string]string{}
	for name, u := range p.state.Load().upstreams {
		if u.tokens == nil {
			continue
		}
		if fe := u.tokens.Failing(); fe != nil {
			out[name] = fe.Msg
		}
	}
	return out
}
