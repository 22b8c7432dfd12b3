package proxy_test

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/vendortest"
)

func TestProxy_InjectsHuntressBasicAndStripsCallerHeaders(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp, body := h.do("GET", "/huntress/v1/agents?limit=5&page_token=", nil, map[string]string{
		"Proxy-Authorization": "Bearer " + soarKey,
		"Authorization":       "Basic " + base64.StdEncoding.EncodeToString([]byte("someone:else")),
		"Cookie":              "session=caller",
		"X-Forwarded-For":     "10.9.8.7",
		"Forwarded":           "for=10.9.8.7",
		"X-Request-Id":        "caller-id-123",
	})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Request-Id"); got != "caller-id-123" {
		t.Errorf("X-Request-Id %q, want the caller's", got)
	}
	if v := resp.Header.Values("X-Request-Id"); len(v) != 1 {
		t.Errorf("X-Request-Id appears %d times", len(v))
	}
	if resp.Header.Get("X-Vendor-Request-Id") != "huntress-req-1" {
		t.Errorf("vendor's request id not kept as X-Vendor-Request-Id")
	}
	m := mustJSON(t, body)
	if agents, _ := m["agents"].([]any); len(agents) != 5 {
		t.Errorf("got %d agents, want 5", len(agents))
	}
	if _, ok := m["pagination"].(map[string]any)["next_page_token"].(string); !ok {
		t.Errorf("pagination missing: %s", body)
	}

	reqs := h.huntress.Requests()
	if len(reqs) != 1 {
		t.Fatalf("vendor got %d requests", len(reqs))
	}
	got := reqs[0]
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(huntressKey+":"+huntressSecret))
	if a := got.Header.Values("Authorization"); len(a) != 1 || a[0] != want {
		t.Errorf("vendor Authorization %q, want the injected pair", a)
	}
	for _, hdr := range []string{"Proxy-Authorization", "Cookie", "X-Forwarded-For", "Forwarded", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := got.Header.Get(hdr); v != "" {
			t.Errorf("vendor received %s: %q", hdr, v)
		}
	}
	if got.Path != "/v1/agents" || got.RawQuery != "limit=5&page_token=" {
		t.Errorf("vendor got path %q query %q", got.Path, got.RawQuery)
	}
}

func TestProxy_InjectsInfocyteRawToken(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp, body := h.do("GET", "/infocyte/Version", nil, bearer(soarKey))
	if resp.StatusCode != 200 || !strings.Contains(body, "serverVersion") {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	resp, body = h.do("POST", "/infocyte/targets/t1/scan", strings.NewReader(`{"options":{}}`),
		map[string]string{"Proxy-Authorization": "Bearer " + soarKey, "Content-Type": "application/json"})
	if resp.StatusCode != 200 || !strings.Contains(body, `"userTaskId":"ut-t1"`) {
		t.Fatalf("scan: status %d: %s", resp.StatusCode, body)
	}
	reqs := h.infocyte.Requests()
	if len(reqs) != 2 {
		t.Fatalf("vendor got %d requests", len(reqs))
	}
	for _, r := range reqs {
		if a := r.Header.Get("Authorization"); a != infocyteToken {
			t.Errorf("vendor Authorization is not the raw token")
		}
	}
	if reqs[0].Path != "/api/Version" || reqs[1].Path != "/api/targets/t1/scan" {
		t.Errorf("paths %q %q", reqs[0].Path, reqs[1].Path)
	}
	if string(reqs[1].Body) != `{"options":{}}` {
		t.Errorf("body %q", reqs[1].Body)
	}
}

func TestProxy_ErrorReplies(t *testing.T) {
	h := newHarness(t, harnessOpts{huntressYAML: "    max_request_bytes: 100\n"})
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"no caller key", "GET", "/huntress/v1/agents", "", nil, 401, "caller_unauthenticated"},
		{"unknown caller key", "GET", "/huntress/v1/agents", "", bearer("kbk_not_a_key"), 401, "caller_unauthenticated"},
		{"malformed Proxy-Authorization", "GET", "/huntress/v1/agents", "", map[string]string{"Proxy-Authorization": "Basic abc"}, 401, "caller_unauthenticated"},
		{"unknown upstream", "GET", "/nosuch/v1/agents", "", bearer(soarKey), 404, "unknown_upstream"},
		{"body over the limit", "POST", "/huntress/v1/agents", strings.Repeat("x", 101), bearer(soarKey), 413, "body_too_large"},
		{"dot segment", "GET", "/huntress/v1/../v1/agents", "", bearer(soarKey), 400, "bad_request"},
		{"forbidden by policy", "GET", "/infocyte/Version", "", bearer(siemKey), 403, "caller_forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.huntress.Count(0) + h.infocyte.Count(0)
			req, _ := http.NewRequest(tc.method, h.srv.URL+tc.path, strings.NewReader(tc.body))
			req.URL.Opaque = tc.path // send the path exactly as written
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, body := h.send(req)
			contractError(t, resp, body, tc.status, tc.code)
			if after := h.huntress.Count(0) + h.infocyte.Count(0); after != before {
				t.Errorf("a refused call reached the vendor")
			}
			rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
			if rec["status"] != float64(tc.status) || rec["outcome"] != audit.OutcomeRefused {
				t.Errorf("audit record status %v outcome %v", rec["status"], rec["outcome"])
			}
			if !strings.HasPrefix(rec["error"].(string), tc.code) {
				t.Errorf("audit error %q", rec["error"])
			}
		})
	}
}

// TestProxy_UnknownCallerIsRefusedBeforeTheRoute: a caller without a key
// gets 401 whatever the upstream, never a 404 that would confirm a name;
// the message names how to send a key (for a configured upstream, its
// drop-in slot too: upstream names are not secret, see the README's
// security model).
func TestProxy_UnknownCallerIsRefusedBeforeTheRoute(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r1, b1 := h.do("GET", "/nosuch/x", nil, nil)
	r2, b2 := h.do("GET", "/huntress/v1/agents", nil, nil)
	contractError(t, r1, b1, 401, "caller_unauthenticated")
	contractError(t, r2, b2, 401, "caller_unauthenticated")
	m1 := mustJSON(t, b1)["error"].(map[string]any)["message"].(string)
	m2 := mustJSON(t, b2)["error"].(map[string]any)["message"].(string)
	if m1 != "no valid caller identity: send Proxy-Authorization: Bearer <key>" || !strings.HasPrefix(m2, m1+", or ") {
		t.Errorf("messages %q and %q", m1, m2)
	}
}

func TestProxy_VendorDownIs502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	h2 := newHarness(t, harnessOpts{huntressURL: dead})
	resp, body := h2.do("GET", "/huntress/v1/agents", nil, bearer(soarKey))
	contractError(t, resp, body, 502, "upstream_unreachable")
	rec := h2.lastRecord(resp.Header.Get("X-Request-Id"))
	if rec["outcome"] != audit.OutcomeFailed {
		t.Errorf("outcome %v", rec["outcome"])
	}
}

func TestProxy_VendorSlowIs504(t *testing.T) {
	h := newHarness(t, harnessOpts{
		huntressYAML: "    timeout: 1s\n",
		huntress:     vendortest.HuntressOptions{Delay: 2 * time.Second},
	})
	start := time.Now()
	resp, body := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
	contractError(t, resp, body, 504, "upstream_timeout")
	if time.Since(start) > 1900*time.Millisecond {
		t.Errorf("the caller waited for the slow vendor instead of the timeout")
	}
}

func TestProxy_RequestIDs(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cases := []struct{ sent, want string }{
		{"abc-123", "abc-123"},
		{"has space", ""},
		{strings.Repeat("a", 200), ""},
		{"", ""},
	}
	for _, tc := range cases {
		hdr := bearer(soarKey)
		if tc.sent != "" {
			hdr["X-Request-Id"] = tc.sent
		}
		resp, _ := h.do("GET", "/huntress/v1/account", nil, hdr)
		got := resp.Header.Get("X-Request-Id")
		if tc.want != "" && got != tc.want {
			t.Errorf("sent %q: got id %q", tc.sent, got)
		}
		if tc.want == "" && (got == "" || got == tc.sent) {
			t.Errorf("sent %q: got id %q, want a fresh one", tc.sent, got)
		}
		reqs := h.huntress.Requests()
		if reqs[len(reqs)-1].Header.Get("X-Request-Id") != got {
			t.Errorf("vendor did not get the same request id")
		}
	}
}

func TestProxy_AuditRecordForForwardedCall(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp, _ := h.do("GET", "/infocyte/Agents?access_token=dropme&filter=%7B%7D", nil, bearer(soarKey))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
	want := map[string]any{
		"type": "call", "caller": "soar", "caller_auth": "key", "method": "GET",
		"upstream": "infocyte", "path": "/Agents", "status": float64(200), "outcome": "forwarded",
		"retried": false, "error": "", "query": "filter=%7B%7D", // as forwarded: the drop-in slot's parameter never left
	}
	if reqs := h.infocyte.Requests(); reqs[len(reqs)-1].RawQuery != "filter=%7B%7D" {
		t.Errorf("the vendor got query %q", reqs[len(reqs)-1].RawQuery)
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("audit %s = %v, want %v", k, rec[k], v)
		}
	}
	cred, _ := rec["credential"].(map[string]any)
	if cred["source"] != "file" || cred["version"] != float64(1) || !strings.HasSuffix(cred["ref"].(string), "infocyte.json") {
		t.Errorf("credential %v", cred)
	}
	for _, k := range []string{"time", "request_id", "remote_addr", "bytes_in", "bytes_out", "duration_ms", "upstream_ms", "ratelimit_wait_ms", "seq", "prev"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("audit record lacks %s", k)
		}
	}
	if rec["bytes_out"].(float64) <= 0 {
		t.Errorf("bytes_out %v", rec["bytes_out"])
	}
	// The caller's access_token never reached the vendor.
	reqs := h.infocyte.Requests()
	if q := reqs[len(reqs)-1].RawQuery; strings.Contains(q, "access_token") || q != "filter=%7B%7D" {
		t.Errorf("vendor query %q", q)
	}
	if n, err := audit.Verify(strings.NewReader(h.auditBuf.String())); err != nil || n == 0 {
		t.Errorf("audit chain: %d records, %v", n, err)
	}
}

// TestProxy_PlaceholderCredentialNeverReachesTheVendor: a credential whose
// field still holds an example's REPLACE_WITH_ placeholder gets 503
// credential_unavailable naming it, and the vendor sees nothing.
func TestProxy_PlaceholderCredentialNeverReachesTheVendor(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.writeSecret("huntress.json", map[string]string{"api_key": "REPLACE_WITH_HUNTRESS_API_KEY", "api_secret": huntressSecret})
	h.writeSecret("infocyte.json", map[string]string{"token": "REPLACE_WITH_INFOCYTE_API_TOKEN"})
	for _, path := range []string{"/huntress/v1/account", "/infocyte/Version"} {
		resp, body := h.do("GET", path, nil, bearer(soarKey))
		contractError(t, resp, body, 503, "credential_unavailable")
		if !strings.Contains(body, "placeholder credential") {
			t.Errorf("%s: message does not name the placeholder: %s", path, body)
		}
		rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
		if rec["status"] != float64(503) || !strings.Contains(rec["error"].(string), "placeholder credential") {
			t.Errorf("%s: audit record %v", path, rec)
		}
	}
	if n := h.huntress.Count(0) + h.infocyte.Count(0); n != 0 {
		t.Errorf("the vendors received %d calls with a placeholder credential", n)
	}
}

// TestProxy_DropinWrongUserNameSaysSo: a valid key under another user name
// gets a 401 that says the name is wrong; any other bad drop-in credential
// gets the usual 401 that names no part.
func TestProxy_DropinWrongUserNameSaysSo(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	basic := func(user, pass string) map[string]string {
		return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
	}
	resp, body := h.do("GET", "/huntress/v1/account", nil, basic("soar", soarKey))
	if resp.StatusCode != 200 {
		t.Fatalf("right name and key: %d %s", resp.StatusCode, body)
	}
	for _, tc := range []struct {
		name      string
		hdr       map[string]string
		wrongName bool
	}{
		{"valid key, another caller's name", basic("siem", soarKey), true},
		{"valid key, unknown name", basic("dev", soarKey), true},
		{"valid key, name case differs", basic("SOAR", soarKey), true},
		{"known name, wrong key", basic("soar", "kbk_not_the_key_at_all_0000"), false},
		{"unknown name, wrong key", basic("nobody", "kbk_not_the_key_at_all_0000"), false},
		{"no name", basic("", soarKey), false},
	} {
		resp, body := h.do("GET", "/huntress/v1/account", nil, tc.hdr)
		contractError(t, resp, body, 401, "caller_unauthenticated")
		if got := strings.Contains(body, "the user name must be its caller's name"); got != tc.wrongName {
			t.Errorf("%s: says the user name is wrong: %v, want %v (%s)", tc.name, got, tc.wrongName, body)
		}
		if strings.Contains(body, `"soar"`) || strings.Contains(body, "siem") {
			t.Errorf("%s: the 401 names a caller: %s", tc.name, body)
		}
	}
	if n := h.huntress.Count(0); n != 1 {
		t.Errorf("vendor got %d calls, want only the good one", n)
	}
}

// TestProxy_TheAuditRecordsEveryQueryTheVendorReceives: whatever a caller
// puts in its query (bad escapes, empty pairs, a lone %), the vendor gets
// it and the audit records it byte for byte, credential values aside; a
// query the splitter would read differently from a vendor's framework
// (';') or too long to record whole is refused, and reaches nobody.
func TestProxy_TheAuditRecordsEveryQueryTheVendorReceives(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, tc := range []struct{ query, audited string }{
		{"organization_id=4242&x=%zz", "organization_id=4242&x=%zz"},
		{"%", "%"},
		{"a=1&&b&c=%E2%82&organization_id=4242", "a=1&&b&c=%E2%82&organization_id=4242"},
		{"limit=2&api%5Fkey=hidden-value&x=%zz", "limit=2&api%5Fkey=REDACTED&x=%zz"},
		{"note=" + url.QueryEscape(soarKey) + "&limit=2", "note=REDACTED&limit=2"},
	} {
		req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/agents", nil)
		req.URL.RawQuery = tc.query
		req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
		resp, _ := h.send(req)
		reqs := h.huntress.Requests()
		if resp.StatusCode != 200 && resp.StatusCode != 400 || reqs[len(reqs)-1].RawQuery != tc.query {
			t.Errorf("%q: status %d, the vendor got %q", tc.query, resp.StatusCode, reqs[len(reqs)-1].RawQuery)
		}
		if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); rec["query"] != tc.audited {
			t.Errorf("%q: audited %q, want %q", tc.query, rec["query"], tc.audited)
		}
	}
	for _, q := range []string{"x=1;organization_id=4242", "a=%3B;b", ";", "x=" + strings.Repeat("a", audit.MaxQuery)} {
		before := h.huntress.Count(0)
		req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/agents", nil)
		req.URL.RawQuery = q
		req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
		resp, body := h.send(req)
		contractError(t, resp, body, 400, "bad_request")
		if h.huntress.Count(0) != before {
			t.Errorf("%.40q reached the vendor", q)
		}
		if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); len(rec["query"].(string)) < len(q) && !strings.Contains(rec["query"].(string), "truncated") {
			t.Errorf("%.40q: the refusal's record lost the query: %.60q", q, rec["query"])
		}
	}
}
