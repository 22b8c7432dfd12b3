package proxy

import (
	"context"
	"errors"
	"net/http"
	"slices"
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
	if h := p.opts.Hooks.VendorTokenFetched; h != nil {
		h(f.Upstream, f.Reason, result)
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
