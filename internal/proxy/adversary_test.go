package proxy_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

// vendorCount is how many requests the fake vendors have received.
func (h *harness) vendorCount() int {
	return len(h.huntress.Requests()) + len(h.infocyte.Requests()) + len(h.rogue.Requests())
}

// TestAdversary_UpgradesAreRefused: no Upgrade (websocket, h2c, any case or
// spelling) opens a tunnel past policy and audit; a vendor that switches
// protocols unasked gets nothing through either.
func TestAdversary_UpgradesAreRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	auth := "Proxy-Authorization: Bearer " + soarKey + "\r\n"
	cases := map[string]string{
		"websocket":             "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
		"h2c":                   "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
		"upgrade without token": "Upgrade: anything/1.0\r\n",
		"lower-case header":     "connection: keep-alive, UPGRADE\r\nupgrade: WebSocket\r\n",
		"connection token only": "Connection: keep-alive,upgrade\r\n",
		"http2-settings only":   "HTTP2-Settings: AAMAAABkAAQAAP__\r\n",
	}
	for name, hdr := range cases {
		t.Run(name, func(t *testing.T) {
			before := h.vendorCount()
			resp := h.raw("GET /rogue/upgrade HTTP/1.1\r\nHost: kb\r\n" + auth + hdr + "\r\n")
			if resp.StatusCode != 400 || resp.Header.Get("Keybroker-Error") != "bad_request" {
				t.Errorf("status %d %q, want 400 bad_request", resp.StatusCode, resp.Header.Get("Keybroker-Error"))
			}
			if h.vendorCount() != before {
				t.Error("the vendor received an upgrade request")
			}
		})
	}

	// A vendor that answers 101 to a plain GET: the caller gets a 502, and
	// a DELETE written after it never reaches the vendor.
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /rogue/upgrade HTTP/1.1\r\nHost: kb\r\n%s\r\n", auth)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("unasked 101: status %d, want 502", resp.StatusCode)
	}
	fmt.Fprintf(conn, "DELETE /v1/admin/everything HTTP/1.1\r\nHost: vendor\r\n\r\n")
	time.Sleep(100 * time.Millisecond) // give a tunnel, if any, time to carry it
	if tun := h.rogue.Tunnel(); len(tun) > 0 {
		t.Errorf("bytes went through a tunnel to the vendor: %q", tun)
	}
	if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); rec["status"] != float64(502) {
		t.Errorf("audit status %v", rec["status"])
	}
}

// TestAdversary_RequestTrailersNeverReachTheVendor: a chunked body with
// Authorization, Proxy-Authorization and Cookie trailers, held (small) or
// streamed (large), on a basic and a header upstream.
func TestAdversary_RequestTrailersNeverReachTheVendor(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	trailers := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("x:y")) + "\r\n" +
		"Proxy-Authorization: Bearer " + soarKey + "\r\nCookie: session=1\r\nX-Smuggled: yes\r\n"
	for _, size := range []int{5, 100 << 10} {
		for _, path := range []string{"/huntress/v1/agents", "/infocyte/Agents"} {
			chunk := strings.Repeat("a", size)
			req := "POST " + path + " HTTP/1.1\r\nHost: kb\r\nProxy-Authorization: Bearer " + soarKey + "\r\n" +
				"Transfer-Encoding: chunked\r\nTrailer: Authorization, Proxy-Authorization, Cookie, X-Smuggled\r\nConnection: close\r\n\r\n" +
				fmt.Sprintf("%x\r\n%s\r\n0\r\n", size, chunk) + trailers + "\r\n"
			resp := h.raw(req)
			if resp.StatusCode >= 500 || resp.Header.Get("Keybroker-Error") != "" {
				t.Fatalf("%s (%d bytes): status %d %s", path, size, resp.StatusCode, resp.Header.Get("Keybroker-Error"))
			}
		}
	}
	reqs := append(h.huntress.Requests(), h.infocyte.Requests()...)
	if len(reqs) != 4 {
		t.Fatalf("vendors got %d requests, want 4", len(reqs))
	}
	for _, r := range reqs {
		if len(r.Trailer) > 0 || r.Header.Get("X-Smuggled") != "" || r.Header.Get("Cookie") != "" || r.Header.Get("Trailer") != "" {
			t.Errorf("%s: the vendor got trailers %v / headers %v", r.Path, r.Trailer, r.Header)
		}
		if r.Status != 200 && r.Status != 404 { // Huntress answers POST with 404, after checking the credential
			t.Errorf("%s: vendor status %d: the injected credential did not survive", r.Path, r.Status)
		}
	}
}

// TestAdversary_SemicolonSegmentsAreRefused: "..;" and every other ";"
// form, raw or encoded, in any segment, never passes the policy.
func TestAdversary_SemicolonSegmentsAreRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	auth := "Proxy-Authorization: Bearer " + siemKey + "\r\n" // GET /v1/agents/** only
	for _, p := range []string{
		"/huntress/v1/agents/..;/..;/admin/users",
		"/huntress/v1/agents/..;",
		"/huntress/v1/agents/x/..;/..;/..;/v1/admin",
		"/huntress/v1/agents;jsessionid=1",
		"/huntress/v1/agents/%3b",
		"/huntress/v1/agents/..%3B/admin",
		"/huntress/v1/agents/.%2e;/admin",
		"/huntress;x/v1/agents",
		"/huntress/v1/agents/;/admin",
	} {
		before := h.vendorCount()
		resp := h.raw("GET " + p + " HTTP/1.1\r\nHost: kb\r\n" + auth + "Connection: close\r\n\r\n")
		if resp.StatusCode != 400 {
			t.Errorf("%s: status %d, want 400", p, resp.StatusCode)
		}
		if h.vendorCount() != before {
			t.Errorf("%s reached the vendor", p)
		}
	}
}

// TestAdversary_OverrideAndForwardingHeadersAreStripped: the whole
// X-Forwarded-* family and the method/URL override headers, however they
// are spelled (case, underscores), never reach a vendor.
func TestAdversary_OverrideAndForwardingHeadersAreStripped(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	hostile := []string{
		"X-HTTP-Method-Override: DELETE", "X-HTTP-Method: DELETE", "X-Method-Override: DELETE",
		"X-Original-URL: /v1/admin", "X-Rewrite-URL: /v1/admin", "x-original-uri: /v1/admin", "X-Original-Method: DELETE",
		"X-Forwarded-Port: 1", "X-Forwarded-Prefix: /admin", "X-Forwarded-Server: evil", "X-Forwarded-Uri: /admin",
		"X-Forwarded-For: 10.0.0.1", "x-forwarded-host: evil", "X_Forwarded_For: 10.0.0.2", "X_HTTP_Method_Override: DELETE",
		"X-Real-IP: 10.0.0.3", "True-Client-IP: 10.0.0.4", "Forwarded: for=10.0.0.5", "Via: 1.1 evil",
	}
	req := "GET /huntress/v1/account HTTP/1.1\r\nHost: kb\r\nProxy-Authorization: Bearer " + soarKey + "\r\n" +
		strings.Join(hostile, "\r\n") + "\r\nX-Keep-Me: 1\r\nConnection: close\r\n\r\n"
	if resp := h.raw(req); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := h.huntress.Requests()[0].Header
	for k := range got {
		n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		if strings.HasPrefix(n, "x-forwarded-") || strings.HasPrefix(n, "x-original-") || strings.HasPrefix(n, "x-rewrite-") ||
			strings.Contains(n, "method") || n == "x-real-ip" || n == "true-client-ip" || n == "forwarded" || n == "via" {
			t.Errorf("the vendor got %s: %q", k, got[k])
		}
	}
	if got.Get("X-Keep-Me") != "1" {
		t.Error("an ordinary header was stripped too")
	}
}

// TestAdversary_AuditRecordsThePathAsForwarded: escapes are kept, so the
// record says what the vendor got.
func TestAdversary_AuditRecordsThePathAsForwarded(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp := h.raw("GET /huntress/v1/agents/%FF%fe%20x HTTP/1.1\r\nHost: kb\r\nProxy-Authorization: Bearer " + soarKey + "\r\nConnection: close\r\n\r\n")
	got := h.huntress.Requests()
	if len(got) != 1 || got[0].EscapedPath != "/v1/agents/%FF%FE%20x" {
		t.Fatalf("vendor got %+v", got)
	}
	if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); rec["path"] != got[0].EscapedPath {
		t.Errorf("audit path %q, vendor path %q", rec["path"], got[0].EscapedPath)
	}
}

// TestAdversary_KeysAndTokensNeverReachTheAudit: credential-like parameter
// names are redacted, a key inside another parameter's value is too, and a
// key the caller presented is never written, even on a refused call.
func TestAdversary_KeysAndTokensNeverReachTheAudit(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	const unknown = "kbk_PLANTED_unknown_caller_key_0b1d"
	planted = append(planted, unknown)
	t.Cleanup(func() { planted = planted[:len(planted)-1] })
	cases := []struct {
		path string
		hdr  map[string]string
		code int
	}{
		// infocyteapiquery appends ?access_token= to a query that has one.
		{"/infocyte/Agents?filter={}?access_token=" + soarKey, nil, 401},
		{"/infocyte/Agents?filter=%7B%7D%3Faccess_token%3D" + soarKey, nil, 401},
		{"/huntress/v1/agents?refresh_token=a1b2c3d4&client_secret=s3cr3tval&x-api-key=k3yvalue&note=" + unknown,
			map[string]string{"Proxy-Authorization": "Bearer " + unknown}, 401},
		{"/huntress/v1/agents?note=" + soarKey, map[string]string{"Proxy-Authorization": "Bearer " + soarKey}, 200},
		{"/huntress/v1/agents/" + soarKey, map[string]string{"Proxy-Authorization": "Bearer " + soarKey}, 404},
	}
	for _, tc := range cases {
		resp, _ := h.do("GET", tc.path, nil, tc.hdr)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.code)
		}
		rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
		for _, secret := range []string{"a1b2c3d4", "s3cr3tval", "k3yvalue"} {
			if strings.Contains(fmt.Sprint(rec), secret) {
				t.Errorf("%s: audit holds %s: %v", tc.path, secret, rec)
			}
		}
	}
	// checkNoLeaks (at cleanup) searches the whole audit for soarKey and unknown.
}

// TestAdversary_DropinBasicNeedsTheCallerName: ":<key>" identifies nobody.
func TestAdversary_DropinBasicNeedsTheCallerName(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, user := range []string{"", " ", "siem"} {
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+soarKey))
		resp, body := h.do("GET", "/huntress/v1/account", nil, map[string]string{"Authorization": basic})
		contractError(t, resp, body, 401, "caller_unauthenticated")
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("soar:"+soarKey))
	if resp, _ := h.do("GET", "/huntress/v1/account", nil, map[string]string{"Authorization": basic}); resp.StatusCode != 200 {
		t.Errorf("soar:<key> status %d", resp.StatusCode)
	}
}

// TestAdversary_RecordsStaySmallWhateverTheRequest: maximal requests (long
// paths of invalid UTF-8, long queries, long refused paths repeated in the
// error) write records of a few KiB at most, with a truncation marker.
func TestAdversary_RecordsStaySmallWhateverTheRequest(t *testing.T) {
	h := newHarness(t, harnessOpts{maxHeaderBytes: 1 << 20})
	longFF := strings.Repeat("%FF", 200<<10/3)
	longQuery := strings.Repeat("a=%FF%00&", 100<<10/9)
	reqs := []string{
		"GET /huntress/v1/agents/" + longFF + " HTTP/1.1\r\nProxy-Authorization: Bearer " + siemKey + "\r\n", // 403: the path is repeated in the error
		"GET /huntress/v1/agents/" + longFF + " HTTP/1.1\r\n",                                                // 401
		"GET /huntress/v1/agents?" + longQuery + " HTTP/1.1\r\nProxy-Authorization: Bearer " + soarKey + "\r\n",
		"GET /" + strings.Repeat("u", 100<<10) + "/x HTTP/1.1\r\nProxy-Authorization: Bearer " + soarKey + "\r\n", // 404
		"GET /huntress/v1/agents/" + strings.Repeat("%C3%A9", 50<<10) + " HTTP/1.1\r\nProxy-Authorization: Bearer " + soarKey + "\r\n",
	}
	for _, r := range reqs {
		h.raw(r + "Host: kb\r\nConnection: close\r\n\r\n")
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(h.records()) < len(reqs) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// One record each, and a begin line before each of the two
	// forwarded: every line is bounded.
	lines := strings.Split(strings.TrimSpace(h.auditBuf.String()), "\n")
	if n := len(h.records()); n != len(reqs) || len(lines) != len(reqs)+2 {
		t.Fatalf("%d records and %d lines for %d requests", n, len(lines), len(reqs))
	}
	truncated := 0
	for _, l := range lines {
		if len(l) > 4<<10 {
			t.Errorf("a record of %d bytes: %.200s", len(l), l)
		}
		if strings.Contains(l, "…[truncated from ") {
			truncated++
		}
	}
	if truncated < 3 { // the unknown upstream's long name is not recorded at all
		t.Errorf("%d records carry the truncation marker, want at least 3", truncated)
	}
	if n, err := audit.Verify(strings.NewReader(h.auditBuf.String())); err != nil || n != len(lines) {
		t.Errorf("verify: %d, %v", n, err)
	}
}

// TestAdversary_UnidentifiedRequestsAreLimitedAndSummarised: requests
// without a valid identity (no key, a wrong key, a malformed request) from
// one address get their own records up to the limit, then 429 and a count
// in one summary event; a caller with a key is not affected.
func TestAdversary_UnidentifiedRequestsAreLimitedAndSummarised(t *testing.T) {
	h := newHarness(t, harnessOpts{unidentified: proxy.UnidentifiedLimits{
		PerSource: ratelimit.Quota{Requests: 10, Per: time.Hour, Burst: 5},
		Total:     ratelimit.Quota{Requests: 1000, Per: time.Hour, Burst: 500},
	}})
	keyless := []string{
		"GET /huntress/v1/agents HTTP/1.1\r\n",
		"GET /huntress/v1/agents HTTP/1.1\r\nProxy-Authorization: Bearer kbk_wrong\r\n",
		"GET /huntress/v1/../admin HTTP/1.1\r\n",
		"GET /nope/x HTTP/1.1\r\n",
	}
	codes := map[int]int{}
	for i := 0; i < 20; i++ {
		resp := h.raw(keyless[i%len(keyless)] + "Host: kb\r\nConnection: close\r\n\r\n")
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 && (resp.Header.Get("Retry-After") == "" || resp.Header.Get("Keybroker-Error") != "rate_limited") {
			t.Errorf("429 without Retry-After or code: %v", resp.Header)
		}
	}
	if codes[429] != 15 {
		t.Errorf("status counts %v: want 5 answered, 15 refused with 429", codes)
	}
	if resp, _ := h.do("GET", "/huntress/v1/account", nil, map[string]string{
		"Proxy-Authorization": "Bearer " + soarKey, "X-Request-Id": "known-after-keyless"}); resp.StatusCode != 200 {
		t.Errorf("a known caller got %d", resp.StatusCode)
	}
	// The record follows the reply (it is written after the reply is
	// flushed): wait for it before counting.
	h.lastRecord("known-after-keyless")
	h.proxy.FlushSummary()
	var calls, summaries int
	for _, l := range strings.Split(strings.TrimSpace(h.auditBuf.String()), "\n") {
		m := mustJSON(t, l)
		switch m["type"] {
		case "call":
			calls++
		case "event":
			ev := m["event"].(map[string]any)
			if ev["name"] == "unidentified_summary" {
				summaries++
				if ev["count"] != float64(15) || ev["remote_addr"] != "127.0.0.1" {
					t.Errorf("summary %v", ev)
				}
			}
		}
	}
	if calls != 6 || summaries != 1 {
		t.Errorf("%d call records and %d summaries: want 5 refusals and the known call, and one summary", calls, summaries)
	}
}

// TestAdversary_HeldBodyIsCutOff: a client that announces a body and never
// sends it gets a 400 at read_body_timeout, with its record, instead of
// holding the connection; one without a key is answered and closed at once.
func TestAdversary_HeldBodyIsCutOff(t *testing.T) {
	h := newHarness(t, harnessOpts{readBodyTimeout: 300 * time.Millisecond})
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	for _, tc := range []struct {
		name, auth string
		status     int
		within     time.Duration
	}{
		{"with a key", "Proxy-Authorization: Bearer " + soarKey + "\r\n", 400, 3 * time.Second},
		{"without a key", "", 401, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			start := time.Now()
			_ = conn.SetDeadline(start.Add(5 * time.Second))
			fmt.Fprintf(conn, "POST /huntress/v1/agents HTTP/1.1\r\nHost: kb\r\n%sContent-Length: 1000\r\n\r\n", tc.auth)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			_, _ = io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || time.Since(start) > tc.within {
				t.Errorf("status %d after %s", resp.StatusCode, time.Since(start))
			}
			if _, err := br.ReadByte(); !resp.Close || err != io.EOF {
				t.Errorf("the connection stayed open (Connection: close %v, next read %v)", resp.Close, err)
			}
			if tc.status == 400 {
				rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
				if !strings.Contains(fmt.Sprint(rec["error"]), "read_body_timeout") {
					t.Errorf("record error %v", rec["error"])
				}
			}
		})
	}
}

// TestProxy_401NamesOnlyTheWaysThisUpstreamAccepts: the refusal says how
// to identify for this upstream (its drop-in slot), and offers a client
// certificate only where the listener verifies one.
func TestProxy_401NamesOnlyTheWaysThisUpstreamAccepts(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cases := map[string]string{
		"/huntress/v1/agents": "send Proxy-Authorization: Bearer <key>, or Authorization: Basic base64(<caller name>:<key>)",
		"/infocyte/Agents":    "send Proxy-Authorization: Bearer <key>, or Authorization: <key> (or Bearer <key>), or X-Access-Token: <key> (or Bearer <key>), or ?access_token=<key>",
		"/rogue/x":            "send Proxy-Authorization: Bearer <key>, or ?api_key=<key>",
		"/nope/x":             "send Proxy-Authorization: Bearer <key>",
	}
	for path, want := range cases {
		resp, body := h.do("GET", path, nil, nil)
		contractError(t, resp, body, 401, "caller_unauthenticated")
		msg := mustJSON(t, body)["error"].(map[string]any)["message"].(string)
		if msg != "no valid caller identity: "+want {
			t.Errorf("%s: %q", path, msg)
		}
	}
}
