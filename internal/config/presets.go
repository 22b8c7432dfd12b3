package config

import "time"

// preset is what a vendor preset fills in when the upstream leaves it empty.
type preset struct {
	url              string
	auth             Auth
	rateLimit        *RateLimit
	dropinQuery      []string
	stripHeaders     []string
	vendorRetryAfter time.Duration
	urlHint          string
	rewriteLinks     []string
	// lifetime is how long the vendor's credentials live.
	lifetime time.Duration
	// probe proves a credential: a cheap authenticated read.
	probe *Probe
	// headers are sent when the caller sent none of that name.
	headers map[string]string
}

// presets are the vendors keybroker knows by name. Everything else is one
// upstreams: entry with url, auth and rate_limit spelled out.
var presets = map[string]preset{
	// Huntress: HTTP Basic with the API key pair; 60 requests in any 60 s
	// window per account (all 60 may go at once), 429 beyond it with no
	// Retry-After, so a refused call waits out a whole window.
	"huntress": {
		url:              "https://api.huntress.io",
		auth:             Auth{Type: "basic", UsernameField: "api_key", PasswordField: "api_secret"},
		rateLimit:        &RateLimit{Requests: 60, Per: Duration(time.Minute)},
		vendorRetryAfter: time.Minute,
		// List replies carry an absolute link to the next page.
		rewriteLinks: []string{"pagination.next_page_url"},
		probe:        &Probe{Method: "GET", Path: "/v1/account"},
	},
	// Huntress Managed Security Awareness Training (the former Curricula):
	// OAuth2 client credentials, sent in the form body as Huntress's own
	// client (pyhuntress HuntressSATAPIClient) sends them, to
	// /oauth/token; the API speaks JSON:API. No rate limit is documented
	// (not verified), so the preset sets none. The scope is the
	// account's: set auth.scope.
	"huntress-sat": {
		url:     "https://mycurricula.com",
		auth:    Auth{Type: OAuthType, TokenURL: "https://mycurricula.com/oauth/token", ClientAuth: "body"},
		headers: map[string]string{"Accept": "application/vnd.api+json", "Content-Type": "application/vnd.api+json"},
	},
	// Infocyte HUNT (LoopBack 3): the raw token in Authorization (a Bearer
	// scheme is refused by the vendor). Its own clients also send the token
	// as ?access_token= or X-Access-Token, so those never pass through.
	"infocyte": {
		auth:             Auth{Type: "header", Header: "Authorization", Field: "token"},
		dropinQuery:      []string{"access_token"},
		stripHeaders:     []string{"X-Access-Token"},
		vendorRetryAfter: 5 * time.Second,
		urlHint:          "https://<instance>.infocyte.com/api",
		// "New tokens will expire after one year from their creation date."
		lifetime: 365 * 24 * time.Hour,
	},
}

// applyPreset fills what u leaves empty from its preset. An auth of another
// type than the preset's replaces the preset's auth entirely.
func applyPreset(u *Upstream, p preset) {
	if u.URL == "" {
		u.URL = p.url
	}
	if u.Credential.Lifetime == 0 {
		u.Credential.Lifetime = Duration(p.lifetime)
	}
	if u.Probe == nil && p.probe != nil {
		pr := *p.probe
		u.Probe = &pr
	}
	if u.Auth.Type == "" || u.Auth.Type == p.auth.Type {
		a := &u.Auth
		a.Type = p.auth.Type
		def(&a.UsernameField, p.auth.UsernameField)
		def(&a.PasswordField, p.auth.PasswordField)
		def(&a.Header, p.auth.Header)
		def(&a.Field, p.auth.Field)
		def(&a.Param, p.auth.Param)
		def(&a.Prefix, p.auth.Prefix)
		def(&a.TokenURL, p.auth.TokenURL)
		def(&a.ClientAuth, p.auth.ClientAuth)
	}
	if p.rateLimit != nil {
		if u.RateLimit == nil {
			rl := *p.rateLimit
			u.RateLimit = &rl
		} else {
			r := u.RateLimit
			if r.Requests == 0 {
				r.Requests = p.rateLimit.Requests
			}
			if r.Per == 0 {
				r.Per = p.rateLimit.Per
			}
			if r.Burst == 0 {
				r.Burst = p.rateLimit.Burst
			}
		}
	}
	if u.RewriteLinks == nil {
		u.RewriteLinks = p.rewriteLinks
	}
}
