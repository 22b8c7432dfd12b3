package config

import (
	"os"
	"strings"
	"testing"
)

const satUpstream = `
  - name: huntress-sat
    preset: huntress-sat
    auth: {type: oauth2_client_credentials, scope: "accounts:read users:read"}
    credential:
      vault: {mount: secret, path: vendors/huntress-sat}
`

// TestLoad_OAuthUpstreams: the huntress-sat preset fills URL, token URL,
// body client auth and the JSON:API headers, with no rate limit; the
// drop-in token path is token_url's path on the same origin, else
// /oauth/token, or as set.
func TestLoad_OAuthUpstreams(t *testing.T) {
	doc := strings.Replace(base, "callers:", satUpstream+`  - name: okta-vendor
    url: https://api.vendor.example/v2
    auth: {type: oauth2_client_credentials, token_url: "https://login.idp.example/oauth2/token"}
    credential: {vault: {mount: secret, path: vendors/v}}
  - name: custom-path
    url: https://api.other.example
    auth: {type: oauth2_client_credentials, token_url: "https://api.other.example/token", dropin_token_path: /connect/token}
    credential: {vault: {mount: secret, path: vendors/o}}
callers:`, 1)
	c, err := Parse([]byte(doc), nil)
	if err != nil {
		t.Fatal(err)
	}
	sat, idp, custom := c.Upstreams[2], c.Upstreams[3], c.Upstreams[4]
	if sat.URL != "https://mycurricula.com" || sat.Auth.TokenURL != "https://mycurricula.com/oauth/token" ||
		sat.Auth.ClientAuth != "body" || sat.RateLimit != nil || sat.DefaultHeaders()["Accept"] != "application/vnd.api+json" {
		t.Errorf("huntress-sat preset: %+v", sat)
	}
	if got := sat.Auth.Scopes(); len(got) != 2 || got[1] != "users:read" {
		t.Errorf("scopes %v", got)
	}
	for _, tc := range []struct {
		u    Upstream
		want string
	}{{sat, "/oauth/token"}, {idp, "/oauth/token"}, {custom, "/connect/token"}} {
		if got := tc.u.DropinTokenPath(); got != tc.want {
			t.Errorf("%s: drop-in token path %q, want %q", tc.u.Name, got, tc.want)
		}
	}
	if idp.Auth.ClientAuth != "basic" {
		t.Errorf("default client_auth %q, want basic", idp.Auth.ClientAuth)
	}
	if c.OAuth.DropinTokenTTL.D().String() != "1h0m0s" {
		t.Errorf("dropin_token_ttl %v", c.OAuth.DropinTokenTTL)
	}
}

func TestLoad_OAuthErrors(t *testing.T) {
	sat := strings.Replace(base, "callers:", satUpstream+"callers:", 1)
	cases := []struct{ name, from, to, want string }{
		{"token_url on a basic upstream", "    preset: huntress\n", "    preset: huntress\n    auth: {token_url: https://x.example/t}\n", "upstreams[0].auth.token_url: only for type oauth2_client_credentials"},
		{"no token_url", "preset: huntress-sat\n    auth: {", "auth: {", "upstreams[2].auth.token_url: required for type oauth2_client_credentials"},
		{"plain http token_url", "scope:", "token_url: \"http://idp.example/t\", scope:", "upstreams[2].auth.token_url: must be https"},
		{"bad client_auth", "scope:", "client_auth: jwt, scope:", "upstreams[2].auth.client_auth: must be basic or body"},
		{"bad drop-in path", "scope:", "dropin_token_path: \"oauth/../token\", scope:", "upstreams[2].auth.dropin_token_path: must be a clean path"},
		{"field of another type", "scope:", "field: token, scope:", "upstreams[2].auth.field: not used by type oauth2_client_credentials"},
		{"replicas without a shared signing key", "callers:", "ratelimit: {backend: redis, redis: {address: 127.0.0.1:6379}}\ncallers:", "oauth.token_signing: required when replicas run"},
		{"ttl too long", "callers:", "oauth: {dropin_token_ttl: 48h}\ncallers:", "oauth.dropin_token_ttl: must be between 1m and 24h"},
		{"signing key without a source", "callers:", "oauth: {token_signing: {}}\ncallers:", "oauth.token_signing: set exactly one of vault, file or env"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(sat, tc.from) {
				t.Fatalf("test setup: %q not in the document", tc.from)
			}
			_, err := Parse([]byte(strings.Replace(sat, tc.from, tc.to, 1)), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestLoad_Shares: shares are checked against the callers and the quota.
func TestLoad_Shares(t *testing.T) {
	withShares := func(shares string) string {
		return strings.Replace(base, "    preset: huntress\n", "    preset: huntress\n    rate_limit:\n      requests: 60\n      per: 60s\n      shares:\n"+shares, 1)
	}
	c, err := Parse([]byte(withShares("        soar: {reserve: 5, weight: 3}\n")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sh := c.Upstreams[0].RateLimit.Shares["soar"]; sh.Reserve != 5 || sh.Weight != 3 {
		t.Errorf("share %+v", sh)
	}
	// Reserves may take the whole quota.
	if _, err := Parse([]byte(withShares("        soar: {reserve: 60}\n")), nil); err != nil {
		t.Errorf("reserve = requests refused: %v", err)
	}
	for _, tc := range []struct{ shares, want string }{
		{"        soar: {reserve: 61}\n", "upstreams[0].rate_limit.shares: the reserves add up to 61, more than requests (60)"},
		{"        nobody: {max: 5}\n", "upstreams[0].rate_limit.shares.nobody: no caller named \"nobody\""},
		{"        soar: {max: 61}\n", "upstreams[0].rate_limit.shares.soar.max: must be at most requests"},
		{"        soar: {reserve: 10, max: 5}\n", "upstreams[0].rate_limit.shares.soar.reserve: must be at most max"},
		{"        soar: {weight: -1}\n", "upstreams[0].rate_limit.shares.soar.weight: must be positive"},
		{"        soar: {reserve: -1}\n", "upstreams[0].rate_limit.shares.soar.reserve: must not be negative"},
		{"        soar: {}\n", "upstreams[0].rate_limit.shares.soar: set reserve, max or weight"},
		{"        soar: {reserve: 1, mx: 3}\n", "upstreams[0].rate_limit.shares.soar.mx: unknown field"},
	} {
		_, err := Parse([]byte(withShares(tc.shares)), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v\nwant %q", tc.shares, err, tc.want)
		}
	}
	// A caller's own rate_limit is not shared.
	doc := strings.Replace(base, "    key_sha256:", "    rate_limit: {requests: 10, per: 1m, shares: {soar: {max: 1}}}\n    key_sha256:", 1)
	if _, err := Parse([]byte(doc), nil); err == nil || !strings.Contains(err.Error(), "callers[0].rate_limit.shares: only an upstream's quota is shared") {
		t.Errorf("shares on a caller's limit: %v", err)
	}
}

// TestLoad_JWTCallers: jwt callers, and what validation refuses.
func TestLoad_JWTCallers(t *testing.T) {
	dir := t.TempDir()
	jwks := dir + "/jwks.json"
	if err := os.WriteFile(jwks, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	withCallers := func(callers string) string {
		i := strings.Index(base, "callers:")
		j := strings.Index(base, "\nvault:")
		return base[:i] + "callers:\n" + callers + base[j+1:]
	}
	k8s := `  - name: soar
    jwt: {issuer: https://kubernetes.default.svc.cluster.local, audience: keybroker, subject: "system:serviceaccount:soar:workflows", jwks_file: ` + jwks + `, claims: {"/kubernetes.io/namespace": soar}}
`
	c, err := Parse([]byte(withCallers(k8s)), nil)
	if err != nil {
		t.Fatal(err)
	}
	j := c.Callers[0].JWT
	if j.Leeway.D().String() != "30s" || j.MaxLifetime.D().String() != "24h0m0s" || j.Claims["/kubernetes.io/namespace"] != "soar" {
		t.Errorf("jwt defaults %+v", j)
	}
	for _, tc := range []struct{ callers, want string }{
		{"  - name: a\n    jwt: {audience: k, subject: s}\n", "callers[0].jwt.issuer: required"},
		{"  - name: a\n    jwt: {issuer: \"http://idp.example\", audience: k, subject: s}\n", "callers[0].jwt.issuer: must be https"},
		{"  - name: a\n    jwt: {issuer: https://idp.example, subject: s}\n", "callers[0].jwt.audience: required"},
		{"  - name: a\n    jwt: {issuer: https://idp.example, audience: k}\n", "callers[0].jwt.subject: required, or claims"},
		{"  - name: a\n    jwt: {issuer: https://idp.example, audience: k, claims: {namespace: x}}\n", "is not a JSON Pointer"},
		{"  - name: a\n    jwt: {issuer: https://idp.example, audience: k, subject: s, jwks_file: /nonexistent/jwks.json}\n", "callers[0].jwt.jwks_file: cannot read"},
		{"  - name: a\n    jwt: {issuer: https://idp.example, audience: k, subject: s, jwks_url: https://idp.example/k, jwks_file: " + jwks + "}\n", "set jwks_url or jwks_file, not both"},
		{"  - name: a\n    jwt: {issuer: https://idp.example, audience: k, subject: s, leeway: 10m}\n", "callers[0].jwt.leeway: must be between 0s and 5m"},
		{"  - name: a\n    jwt: {issuer: https://idp.example, audience: k, subject: s}\n  - name: b\n    jwt: {issuer: https://idp.example, audience: k, subject: s}\n",
			"callers[1].jwt.subject: same issuer and subject"},
		{"  - name: a\n    jwt: {issuer: https://idp.example, audience: k, subject: s}\n  - name: b\n    jwt: {issuer: https://idp.example, audience: k, subject: t, leeway: 1m}\n",
			"callers[1].jwt: its issuer's settings"},
		{"  - name: a\n    allow: []\n", "callers[0]: set key_sha256, client_cert or jwt"},
	} {
		_, err := Parse([]byte(withCallers(tc.callers)), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v\nwant %q", tc.callers, err, tc.want)
		}
	}
}
