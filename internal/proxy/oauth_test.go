package proxy_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/oauth"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/secrets"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// satGet is a JSON:API read as pyhuntress's HuntressSATAPIClient sends it.
func satGet(h *harness, auth string) (*http.Response, string) {
	h.t.Helper()
	return h.do("GET", "/huntress-sat/api/v1/accounts", nil, map[string]string{
		"Content-Type": "application/vnd.api+json", "Accept": "application/vnd.api+json", "Authorization": auth})
}

// vendorTokens returns the distinct Bearer tokens the SAT fake's API saw.
func vendorTokens(sat *vendortest.SAT) map[string]bool {
	out := map[string]bool{}
	for _, r := range sat.Requests() {
		if strings.HasPrefix(r.Path, "/api/") {
			out[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")] = true
		}
	}
	return out
}

// TestOAuth_TokenKeptFreshUnderLoad: 50 callers for 30 s, vendor tokens
// living 5 s. No call fails, and the token is fetched about once per 4 s
// (refreshed in the background at 80% of its life), never per call.
func TestOAuth_TokenKeptFreshUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s")
	}
	t.Parallel()
	sat := vendortest.NewSAT(satClientID, satSecret, 5*time.Second)
	t.Cleanup(sat.Close)
	h := newHarness(t, harnessOpts{sat: sat})
	const run = 30 * time.Second
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(run)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				resp, err := http.DefaultClient.Do(mustRequest(t, h.srv.URL+"/huntress-sat/api/v1/accounts", bearer(soarKey)))
				calls.Add(1)
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	n := sat.TokenRequests()
	t.Logf("%d calls, %d failed, %d token requests, %d vendor 401s", calls.Load(), failed.Load(), n, sat.Refused())
	if failed.Load() != 0 || sat.Refused() != 0 {
		t.Errorf("%d calls failed, vendor refused %d", failed.Load(), sat.Refused())
	}
	// 30 s / (5 s − 1 s margin) = 7.5: one first fetch and a refresh
	// every 4 s.
	if n < 6 || n > 10 {
		t.Errorf("%d token requests in 30 s with 5 s tokens, want about 8", n)
	}
	if calls.Load() < 100*int64(n) {
		t.Errorf("only %d calls for %d token fetches", calls.Load(), n)
	}
	if got := len(h.auditEvents("token_fetched")); got != 1 {
		t.Errorf("%d token_fetched events, want 1 (refreshes are counted, not recorded)", got)
	}
	h.checkSecretsAbsent(tokensOf(sat)...)
}

func tokensOf(sat *vendortest.SAT) []string {
	var out []string
	for tok := range vendorTokens(sat) {
		out = append(out, tok)
	}
	return out
}

func mustRequest(t *testing.T, u string, hdr map[string]string) *http.Request {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Error(err)
		return nil
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

// TestOAuth_RevokedTokenRenewedOnce: the vendor revokes the token; the
// next call gets one 401, keybroker fetches a new token and retries, and
// the caller sees 200. The vendor got the preset's JSON:API Accept.
func TestOAuth_RevokedTokenRenewedOnce(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	h := newHarness(t, harnessOpts{sat: sat})
	if resp, body := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Fatalf("first call %d %s", resp.StatusCode, body)
	}
	if got := sat.Requests()[1].Header.Get("Accept"); got != "application/vnd.api+json" {
		t.Errorf("vendor got Accept %q, want the preset's JSON:API type", got)
	}
	sat.RevokeAll()
	resp, body := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey))
	if resp.StatusCode != 200 {
		t.Fatalf("after revocation %d %s", resp.StatusCode, body)
	}
	if sat.Refused() != 1 || sat.TokenRequests() != 2 {
		t.Errorf("vendor 401s %d, token requests %d; want 1 and 2", sat.Refused(), sat.TokenRequests())
	}
	if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); rec["retried"] != true {
		t.Errorf("record %v not marked retried", rec)
	}
	if toks := vendorTokens(sat); len(toks) != 2 {
		t.Errorf("vendor saw %d tokens, want 2", len(toks))
	}
	h.checkSecretsAbsent(tokensOf(sat)...)
}

// TestOAuth_TokenEndpointFailures: each failure of the token endpoint is
// told apart from the API's and named: refused client credentials and a
// failing endpoint 503, a slow one 504, a dead one 502. The cached token
// serves until it expires; the endpoint's recovery ends the outage.
func TestOAuth_TokenEndpointFailures(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, 2*time.Second)
	t.Cleanup(sat.Close)
	h := newHarness(t, harnessOpts{sat: sat, satYAML: "    timeout: 1s\n"})
	if resp, _ := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Fatalf("first call %d", resp.StatusCode)
	}
	sat.SetDown(true)
	// Still served from the cached token.
	if resp, _ := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Fatalf("with a live cached token %d", resp.StatusCode)
	}
	time.Sleep(2100 * time.Millisecond)
	resp, body := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey))
	contractError(t, resp, body, 503, proxy.CodeCredentialUnavailable)
	if !strings.Contains(body, "token endpoint "+sat.URL+"/oauth/token") || !strings.Contains(body, "503") {
		t.Errorf("503 does not name the token endpoint and its answer: %s", body)
	}
	if len(h.auditEvents("token_fetch_failed")) == 0 {
		t.Error("no token_fetch_failed event")
	}

	// While it fails, calls ask the endpoint at most once a second.
	before := sat.TokenRequests()
	for range 20 {
		h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey))
	}
	if n := sat.TokenRequests() - before; n > 2 {
		t.Errorf("20 calls within a second asked the failing token endpoint %d times", n)
	}

	sat.SetDown(false)
	sat.SetSlow(1500 * time.Millisecond)
	time.Sleep(1100 * time.Millisecond)
	resp, body = h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey))
	contractError(t, resp, body, 504, proxy.CodeUpstreamTimeout)
	if !strings.Contains(body, "did not answer within 1s") {
		t.Errorf("504 message: %s", body)
	}

	sat.SetSlow(0)
	sat.SetSecret("a-secret-keybroker-does-not-have")
	time.Sleep(1100 * time.Millisecond)
	resp, body = h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey))
	contractError(t, resp, body, 503, proxy.CodeCredentialUnavailable)
	if !strings.Contains(body, "the vendor refused the client credentials") || !strings.Contains(body, "invalid_client") {
		t.Errorf("refused client credentials not named: %s", body)
	}

	sat.SetSecret(satSecret)
	time.Sleep(1100 * time.Millisecond)
	if resp, body := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Fatalf("after recovery %d %s", resp.StatusCode, body)
	}
	if n := len(h.auditEvents("token_fetched")); n != 2 {
		t.Errorf("%d token_fetched events, want the first and the recovery", n)
	}
	// API calls never counted a token fetch: the API saw only calls.
	for _, r := range sat.Requests() {
		if strings.HasPrefix(r.Path, "/api/") && r.Status == http.StatusUnauthorized {
			t.Errorf("the API refused a call: keybroker sent an expired token")
		}
	}
}

// TestOAuth_TokenEndpointUnreachable: a token endpoint nobody answers on
// is 502, naming it.
func TestOAuth_TokenEndpointUnreachable(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	h := newHarness(t, harnessOpts{sat: sat, satTokenURL: dead + "/oauth/token"})
	resp, body := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey))
	contractError(t, resp, body, 502, proxy.CodeUpstreamUnreachable)
	if !strings.Contains(body, "token endpoint "+dead+"/oauth/token") {
		t.Errorf("502 does not name the token endpoint: %s", body)
	}
	if sat.Count(0) != 0 {
		t.Errorf("the API got %d calls without a token", sat.Count(0))
	}
}

// sharedKey is one signing key for replicas (oauth.token_signing).
func sharedKey(secret string) oauth.KeyFunc {
	return func(context.Context, bool) (oauth.SigningKey, error) {
		return oauth.SigningKey{Secret: []byte(secret), Version: 1}, nil
	}
}

const signingSecret = "PLANTED-token-signing-key-0123456789abcdef"

// fetchToken posts a token request as pyhuntress's _get_access_token does
// (form body, Accept JSON), or with HTTP Basic when basic is set.
func fetchToken(h *harness, id, secret string, basic bool) (*http.Response, map[string]any) {
	h.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"anything"}}
	hdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
	if basic {
		hdr["Authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
	} else {
		form.Set("client_id", id)
		form.Set("client_secret", secret)
	}
	resp, body := h.do("POST", "/huntress-sat/oauth/token", strings.NewReader(form.Encode()), hdr)
	return resp, mustJSON(h.t, body)
}

// TestOAuth_DropinPyhuntressFlow replays HuntressSATAPIClient against two
// keybroker replicas: a form POST to /huntress-sat/oauth/token with the
// caller's name and key, then JSON:API GETs with the returned Bearer, on
// either replica. The vendor sees only its own token. A reload that
// changes or removes the caller's key revokes the keybroker token.
func TestOAuth_DropinPyhuntressFlow(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	a := newHarness(t, harnessOpts{sat: sat, issuer: oauth.NewIssuer(sharedKey(signingSecret), time.Hour, nil)})
	b := newHarness(t, harnessOpts{sat: sat, issuer: oauth.NewIssuer(sharedKey(signingSecret), time.Hour, nil)})

	resp, tok := fetchToken(a, "soar", soarKey, false)
	if resp.StatusCode != 200 {
		t.Fatalf("token request %d %v", resp.StatusCode, tok)
	}
	access, _ := tok["access_token"].(string)
	if !strings.HasPrefix(access, oauth.TokenPrefix) || tok["token_type"] != "Bearer" || tok["expires_in"] != float64(3600) {
		t.Fatalf("token reply %v", tok)
	}
	if _, ok := tok["refresh_token"]; ok {
		t.Error("a refresh token was issued")
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	for i, h := range []*harness{a, b, a, b} {
		resp, body := satGet(h, "Bearer "+access)
		if resp.StatusCode != 200 {
			t.Fatalf("replica %d: %d %s", i%2, resp.StatusCode, body)
		}
		rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
		if rec["caller"] != "soar" || rec["caller_auth"] != callers.AuthToken {
			t.Errorf("record %v: want caller soar by token", rec)
		}
	}
	for tok := range vendorTokens(sat) {
		if strings.HasPrefix(tok, oauth.TokenPrefix) || tok == "" {
			t.Errorf("the vendor got %q, not its own token", tok)
		}
	}
	// HTTP Basic client authentication works the same.
	if resp, tok := fetchToken(b, "soar", soarKey, true); resp.StatusCode != 200 || tok["access_token"] == nil {
		t.Errorf("Basic token request %d %v", resp.StatusCode, tok)
	}
	// Issued tokens are counted, and written once per interval (here: at
	// the flush) as one token_issued with its count.
	if evs := a.auditEvents("token_issued"); len(evs) != 0 {
		t.Errorf("token_issued written per request before the flush: %v", evs)
	}
	fetchToken(a, "soar", soarKey, false)
	a.proxy.FlushTokens()
	evs := a.auditEvents("token_issued")
	if len(evs) != 1 || evs[0]["caller"] != "soar" || evs[0]["upstream"] != "huntress-sat" || evs[0]["outcome"] != "issued" || evs[0]["count"] != float64(2) {
		t.Errorf("token_issued events %v; want one, count 2", evs)
	}
	if n := len(a.records()); n != 2 {
		t.Errorf("%d call records on replica a, want 2: the token request is an event, not a call", n)
	}

	// Replica b reloads with soar's key changed: the token is refused
	// there, with the reason.
	_, newSum, _ := callers.NewKey()
	reg, err := callers.NewRegistry([]callers.Caller{{Name: "soar", KeySHA256: hexBytes(t, newSum)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	routes := b.routes
	routes.Callers = reg
	if err := b.proxy.Update(routes); err != nil {
		t.Fatal(err)
	}
	resp, body := satGet(b, "Bearer "+access)
	contractError(t, resp, body, 401, proxy.CodeCallerUnauthenticated)
	if !strings.Contains(body, "revoked") {
		t.Errorf("401 does not say the token was revoked: %s", body)
	}
	// Removed altogether: the same.
	reg, _ = callers.NewRegistry([]callers.Caller{{Name: "siem", KeySHA256: hexBytes(t, callers.HashKey(siemKey))}}, false)
	routes.Callers = reg
	if err := b.proxy.Update(routes); err != nil {
		t.Fatal(err)
	}
	resp, body = satGet(b, "Bearer "+access)
	contractError(t, resp, body, 401, proxy.CodeCallerUnauthenticated)
	// Replica a, not reloaded, still accepts it.
	if resp, _ := satGet(a, "Bearer "+access); resp.StatusCode != 200 {
		t.Errorf("replica a refused the token: %d", resp.StatusCode)
	}
	for _, h := range []*harness{a, b} {
		h.checkSecretsAbsent(append(tokensOf(sat), signingSecret)...)
		// The keybroker token is in the token reply, and nowhere else.
		if strings.Contains(h.auditBuf.String(), access) {
			t.Error("the keybroker token reached the audit")
		}
	}
}

func hexBytes(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	if _, err := fmt.Sscanf(s, "%x", &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOAuth_TokenEndpointRefusals: what RFC 6749 §5.2 says, in OAuth's
// shape, Keybroker-Error still set, each an event, and keyless failures
// counted against the limits for requests without a caller identity.
func TestOAuth_TokenEndpointRefusals(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	h := newHarness(t, harnessOpts{sat: sat, unidentified: proxy.UnidentifiedLimits{
		PerSource: ratelimitLimit(20), Total: ratelimitLimit(100)}})
	basic := func(id, secret string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
	}
	form := "application/x-www-form-urlencoded"
	cases := []struct {
		name, method, ctype, body, auth string
		status                          int
		oauthErr, kbErr                 string
	}{
		{"wrong key", "POST", form, "grant_type=client_credentials&client_id=soar&client_secret=kbk_wrong", "", 401, "invalid_client", "caller_unauthenticated"},
		{"another caller's key", "POST", form, "grant_type=client_credentials&client_id=siem&client_secret=" + soarKey, "", 401, "invalid_client", "caller_unauthenticated"},
		{"wrong key, Basic", "POST", form, "grant_type=client_credentials", basic("soar", "kbk_wrong"), 401, "invalid_client", "caller_unauthenticated"},
		{"Basic and body", "POST", form, "grant_type=client_credentials&client_secret=" + soarKey, basic("soar", soarKey), 400, "invalid_request", "bad_request"},
		{"password grant", "POST", form, "grant_type=password&client_id=soar&client_secret=" + soarKey, "", 400, "unsupported_grant_type", "bad_request"},
		{"no grant_type", "POST", form, "client_id=soar&client_secret=" + soarKey, "", 400, "invalid_request", "bad_request"},
		{"twice", "POST", form, "grant_type=client_credentials&client_id=soar&client_id=soar&client_secret=" + soarKey, "", 400, "invalid_request", "bad_request"},
		{"GET", "GET", "", "", "", 400, "invalid_request", "bad_request"},
		{"JSON body", "POST", "application/json", `{"grant_type":"client_credentials"}`, "", 400, "invalid_request", "bad_request"},
		{"no rule for the upstream", "POST", form, "grant_type=client_credentials&client_id=siem&client_secret=" + siemKey, "", 400, "unauthorized_client", "bad_request"},
	}
	for _, c := range cases {
		hdr := map[string]string{}
		if c.ctype != "" {
			hdr["Content-Type"] = c.ctype
		}
		if c.auth != "" {
			hdr["Authorization"] = c.auth
		}
		resp, body := h.do(c.method, "/huntress-sat/oauth/token", strings.NewReader(c.body), hdr)
		m := mustJSON(t, body)
		if resp.StatusCode != c.status || m["error"] != c.oauthErr || resp.Header.Get("Keybroker-Error") != c.kbErr {
			t.Errorf("%s: %d %s (Keybroker-Error %q), want %d %s", c.name, resp.StatusCode, body, resp.Header.Get("Keybroker-Error"), c.status, c.oauthErr)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", c.name, resp.Header.Get("Cache-Control"))
		}
		wantBasic := c.status == 401 && c.auth != ""
		if got := strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic"); got != wantBasic {
			t.Errorf("%s: WWW-Authenticate %q", c.name, resp.Header.Get("WWW-Authenticate"))
		}
	}
	if n := len(h.auditEvents("token_issued")); n != len(cases) {
		t.Errorf("%d token_issued events for %d requests", n, len(cases))
	}
	// A flood of wrong keys from one address: refused 429 past the
	// keyless limit, still in OAuth's shape.
	var last *http.Response
	for i := 0; i < 40; i++ {
		last, _ = h.do("POST", "/huntress-sat/oauth/token", strings.NewReader("grant_type=client_credentials&client_id=soar&client_secret=kbk_guess"+fmt.Sprint(i)),
			map[string]string{"Content-Type": form})
	}
	if last.StatusCode != 429 || last.Header.Get("Retry-After") == "" || last.Header.Get("Keybroker-Error") != "rate_limited" {
		t.Errorf("flood: last answer %d, Retry-After %q", last.StatusCode, last.Header.Get("Retry-After"))
	}
	if sat.Count(0) != 0 {
		t.Errorf("the vendor got %d requests from token requests", sat.Count(0))
	}
}

// TestOAuth_ForgedTokens: keybroker tokens that must not identify anyone,
// each 401 with the reason, the vendor seeing nothing.
func TestOAuth_ForgedTokens(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	key := sharedKey(signingSecret)
	h := newHarness(t, harnessOpts{sat: sat, issuer: oauth.NewIssuer(key, time.Hour, nil)})
	fp := oauth.Fingerprint(hexBytes(t, callers.HashKey(soarKey)))
	issue := func(is *oauth.Issuer, c oauth.Claims) string {
		tok, _, err := is.Issue(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	soar := oauth.Claims{Caller: "soar", Upstream: "huntress-sat", Fingerprint: fp}
	good := issue(oauth.NewIssuer(key, time.Hour, nil), soar)
	ago := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(-d) } }
	withinGrace := issue(oauth.NewIssuer(key, time.Hour, ago(time.Hour+10*time.Second)), soar)
	expired := issue(oauth.NewIssuer(key, time.Hour, ago(time.Hour+40*time.Second)), soar)
	otherKey := issue(oauth.NewIssuer(sharedKey("another-key-of-32-bytes-or-more-000000000"), time.Hour, nil), soar)
	forUpstream := issue(oauth.NewIssuer(key, time.Hour, nil), oauth.Claims{Caller: "soar", Upstream: "huntress", Fingerprint: fp})
	// The payload of one token with another's signature.
	parts := strings.Split(good, ".")
	siemPayload := strings.Split(issue(oauth.NewIssuer(sharedKey("x-key-of-32-bytes-or-more-0000000000000"), time.Hour, nil),
		oauth.Claims{Caller: "siem", Upstream: "huntress-sat", Fingerprint: fp}), ".")[2]
	spliced := strings.Join([]string{parts[0], parts[1], siemPayload, parts[3]}, ".")

	if resp, body := satGet(h, "Bearer "+withinGrace); resp.StatusCode != 200 {
		t.Errorf("a token 10 s past expiry (inside the 30 s grace): %d %s", resp.StatusCode, body)
	}
	for _, c := range []struct{ name, auth, path, reason string }{
		{"expired", "Bearer " + expired, "/huntress-sat/api/v1/accounts", "expired"},
		{"another key", "Bearer " + otherKey, "/huntress-sat/api/v1/accounts", "signature"},
		{"spliced payload", "Bearer " + spliced, "/huntress-sat/api/v1/accounts", "signature"},
		{"truncated", "Bearer " + good[:len(good)-4], "/huntress-sat/api/v1/accounts", "signature"},
		{"another upstream's", "Bearer " + forUpstream, "/huntress-sat/api/v1/accounts", "another upstream"},
		{"this upstream's, used on huntress", "", "/huntress/v1/agents", "another upstream"},
		{"garbage", "Bearer kbt.zz.zz", "/huntress-sat/api/v1/accounts", "not a keybroker token"},
	} {
		hdr := map[string]string{"Accept": "application/vnd.api+json", "Authorization": c.auth}
		if c.auth == "" {
			hdr = bearer(good)
		}
		resp, body := h.do("GET", c.path, nil, hdr)
		contractError(t, resp, body, 401, proxy.CodeCallerUnauthenticated)
		if !strings.Contains(body, c.reason) {
			t.Errorf("%s: 401 without the reason %q: %s", c.name, c.reason, body)
		}
	}
	// A token is never read from the query (RFC 6750 §2.3): refused at
	// the hygiene step.
	resp, body := h.do("GET", "/huntress-sat/api/v1/accounts?access_token="+url.QueryEscape(good), nil, nil)
	contractError(t, resp, body, 400, proxy.CodeBadRequest)
	if n := sat.Count(0); n != 2 { // the token fetch and the one grace call
		t.Errorf("the vendor got %d requests, want 2", n)
	}
	h.checkSecretsAbsent(good, expired, spliced, signingSecret)
}

func ratelimitLimit(n int) ratelimit.Quota {
	return ratelimit.Quota{Requests: n, Per: time.Minute, Burst: n}
}

// TestOAuth_OneLiveTokenVendor: a vendor that allows one live token per
// client (each new token revokes the earlier ones). Behind one replica
// every call succeeds. Behind two, each fetching its own token, the
// replicas revoke each other's tokens and calls fail: README "Several
// replicas" says so, and this test keeps that sentence true.
func TestOAuth_OneLiveTokenVendor(t *testing.T) {
	load := func(hs ...*harness) (ok, failed int64) {
		var okN, failedN atomic.Int64
		var wg sync.WaitGroup
		for _, h := range hs {
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 25 {
						resp, err := http.DefaultClient.Do(mustRequest(t, h.srv.URL+"/huntress-sat/api/v1/accounts", bearer(soarKey)))
						if err == nil && resp.StatusCode == 200 {
							okN.Add(1)
						} else {
							failedN.Add(1)
						}
						if err == nil {
							resp.Body.Close()
						}
					}
				}()
			}
		}
		wg.Wait()
		return okN.Load(), failedN.Load()
	}
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	sat.SetOneLiveToken(true)
	a := newHarness(t, harnessOpts{sat: sat})
	if ok, failed := load(a); failed != 0 {
		t.Errorf("one replica: %d of %d calls failed", failed, ok+failed)
	}
	b := newHarness(t, harnessOpts{sat: sat})
	ok, failed := load(a, b)
	t.Logf("one live token, 2 replicas: %d ok, %d failed, %d token requests, %d vendor 401s", ok, failed, sat.TokenRequests(), sat.Refused())
	if failed == 0 {
		t.Error("two replicas no longer revoke each other's tokens: update README \"Several replicas\"")
	}
}

// TestOAuth_VendorErrorTextIsNeverRepeated: a token endpoint that echoes
// the client secret in its error and error_description hands it to no
// caller, readiness report, audit record or log line: an error code
// outside RFC 6749 §5.2 is "other", a description is never copied.
func TestOAuth_VendorErrorTextIsNeverRepeated(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, "a-secret-keybroker-does-not-have", time.Hour)
	t.Cleanup(sat.Close)
	sat.SetEcho(true)
	h := newHarness(t, harnessOpts{sat: sat})
	resp, body := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey))
	contractError(t, resp, body, 503, proxy.CodeCredentialUnavailable)
	if !strings.Contains(body, "401 other") || strings.Contains(body, "bad_client_secret") {
		t.Errorf("503 does not name the answer in known words (401 other): %s", body)
	}
	for name, msg := range h.creds.Failures() {
		if strings.Contains(msg, satSecret) || strings.Contains(msg, "bad_client_secret") {
			t.Errorf("readiness of %s repeats the vendor's text: %s", name, msg)
		}
	}
	if len(h.auditEvents("token_fetch_failed")) == 0 {
		t.Error("no token_fetch_failed event")
	}
	// h.checkNoLeaks (at cleanup) searches every reply, audit line and
	// log entry for the planted client secret.
}

// TestOAuth_ACallsRefusalNeverPromotesARefusedClientSecret: the forced
// rotation on an OAuth upstream. A rotated client secret the token
// endpoint refuses is held back; then the vendor's API refuses a call's
// token (401). keybroker proves the client credential in use with a token
// fetch (the renewal is the probe), which works, so it renews the token
// with that credential and the call succeeds; the refused secret never
// serves.
func TestOAuth_ACallsRefusalNeverPromotesARefusedClientSecret(t *testing.T) {
	sat := vendortest.NewSAT(satClientID, satSecret, time.Hour)
	t.Cleanup(sat.Close)
	h := newHarness(t, harnessOpts{sat: sat, prove: true})
	if resp, _ := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Fatalf("first call %d", resp.StatusCode)
	}
	h.writeSecret("sat.json", map[string]string{"client_id": satClientID, "client_secret": "ss_rotated_but_refused"})
	if err := h.cache.Refresh(context.Background(), "huntress-sat"); err != nil {
		t.Fatal(err)
	}
	var held bool
	for _, st := range h.cache.Status() {
		held = held || (st.Name == "huntress-sat" && st.Rejected)
	}
	if !held {
		t.Fatal("the refused client secret is not held back")
	}
	sat.RevokeAll() // the API now refuses the token in use: a vendor 401
	resp, body := h.do("GET", "/huntress-sat/api/v1/accounts", nil, bearer(soarKey))
	if resp.StatusCode != 200 {
		t.Fatalf("after the vendor's 401: %d %s; want the call retried with a token renewed on the secret in use", resp.StatusCode, body)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range h.events {
		if ev.Type == secrets.EventRotated && ev.Upstream == "huntress-sat" {
			t.Errorf("rotation reported: %+v", ev)
		}
	}
}
