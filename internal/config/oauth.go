package config

import (
	"path"
	"strings"
	"time"
)

// OAuthType is the auth type of upstreams whose vendor issues tokens with
// the OAuth2 client-credentials grant.
const OAuthType = "oauth2_client_credentials"

// checkOAuthAuth checks the fields of an oauth2_client_credentials auth,
// and that no other type sets them.
func checkOAuthAuth(e *errs, p string, a *Auth) {
	type field struct{ name, value string }
	if a.Type != OAuthType {
		for _, f := range []field{{"token_url", a.TokenURL}, {"scope", a.Scope}, {"client_auth", a.ClientAuth},
			{"dropin_token_path", a.DropinTokenPath}} {
			if f.value != "" {
				e.add(p+"."+f.name, "only for type %s", OAuthType)
			}
		}
		return
	}
	if a.TokenURL != "" {
		checkUpstreamURL(e, p+".token_url", a.TokenURL, "")
	}
	switch a.ClientAuth {
	case "":
		a.ClientAuth = "basic" // RFC 6749 §2.3.1: every server supports it
	case "basic", "body":
	default:
		e.add(p+".client_auth", "must be basic or body")
	}
	if d := a.DropinTokenPath; d != "" && (!strings.HasPrefix(d, "/") || path.Clean(d) != d || strings.ContainsAny(d, "?#%")) {
		e.add(p+".dropin_token_path", "must be a clean path such as /oauth/token")
	}
	for _, f := range []field{{"username_field", a.UsernameField}, {"password_field", a.PasswordField},
		{"header", a.Header}, {"field", a.Field}, {"param", a.Param}, {"prefix", a.Prefix}} {
		if f.value != "" {
			e.add(p+"."+f.name, "not used by type %s: the credential's fields are client_id and client_secret", OAuthType)
		}
	}
}

// completeOAuth checks the oauth block: a signing key every replica can
// read when replicas run, and the token lifetime.
func (c *Config) completeOAuth(e *errs) {
	o := &c.OAuth
	defDur(&o.DropinTokenTTL, DefaultDropinTokenTTL)
	if d := o.DropinTokenTTL.D(); d < time.Minute || d > 24*time.Hour {
		e.add("oauth.dropin_token_ttl", "must be between 1m and 24h")
	}
	if o.TokenSigning != nil {
		checkCredential(e, "oauth.token_signing", o.TokenSigning)
	}
	oauthUpstreams := false
	for _, u := range c.Upstreams {
		oauthUpstreams = oauthUpstreams || u.Auth.Type == OAuthType
	}
	if oauthUpstreams && o.TokenSigning == nil && c.RateLimit.Backend == "redis" {
		e.add("oauth.token_signing", "required when replicas run (ratelimit.backend: redis): every replica must accept the tokens the others issue")
	}
}

// DropinTokenPath is where, below /NAME, keybroker's token endpoint
// answers drop-in clients of an OAuth upstream ("" for other types):
// dropin_token_path; else token_url's path when token_url has the
// upstream URL's origin (a client that derives it from its base URL finds
// it there); else /oauth/token. Call it on a validated configuration.
func (u Upstream) DropinTokenPath() string {
	a := u.Auth
	switch {
	case a.Type != OAuthType:
		return ""
	case a.DropinTokenPath != "":
		return a.DropinTokenPath
	}
	t, tok := u.TargetURL(), (Upstream{URL: a.TokenURL}).TargetURL()
	if t != nil && tok != nil && t.Scheme == tok.Scheme && strings.EqualFold(t.Host, tok.Host) && tok.Path != "" {
		return tok.Path
	}
	return "/oauth/token"
}

// Scopes are the auth's scope, split at spaces.
func (a Auth) Scopes() []string { return strings.Fields(a.Scope) }
