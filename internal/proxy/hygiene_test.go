package proxy_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// raw sends a request exactly as written over TCP and returns the reply.
func (h *harness) raw(req string) *http.Response {
	h.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		h.t.Fatalf("reading the reply to %q: %v", req[:min(len(req), 60)], err)
	}
	resp.Body.Close()
	return resp
}

func TestProxy_HostileRequests(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	auth := "Proxy-Authorization: Bearer " + soarKey + "\r\n"
	many := strings.Repeat("X-Pad: 1\r\n", 101)
	cases := []struct {
		name     string
		line     string // request line
		headers  string
		status   int
		wantPath string // the path the vendor must get; "" = nothing reaches it
		// byGo: net/http refuses it before keybroker sees it (plain reply).
		byGo bool
	}{
		{"dot-dot", "GET /huntress/v1/../v1/agents HTTP/1.1", auth, 400, "", false},
		{"dot", "GET /huntress/./v1/agents HTTP/1.1", auth, 400, "", false},
		{"trailing dot-dot", "GET /huntress/v1/agents/.. HTTP/1.1", auth, 400, "", false},
		{"encoded dot-dot", "GET /huntress/v1/%2e%2e/agents HTTP/1.1", auth, 400, "", false},
		{"mixed-case encoded dot", "GET /huntress/v1/%2E%2e/agents HTTP/1.1", auth, 400, "", false},
		{"encoded slash", "GET /huntress/v1/agents%2F1 HTTP/1.1", auth, 400, "", false},
		{"encoded slash lower", "GET /huntress/v1%2f..%2fadmin HTTP/1.1", auth, 400, "", false},
		{"backslash", "GET /huntress/v1\\agents HTTP/1.1", auth, 400, "", false},
		{"encoded backslash", "GET /huntress/v1/%5cagents HTTP/1.1", auth, 400, "", false},
		{"encoded NUL", "GET /huntress/v1/agents%00 HTTP/1.1", auth, 400, "", false},
		{"encoded control", "GET /huntress/v1/agents%0d%0aX:1 HTTP/1.1", auth, 400, "", false},
		{"malformed escape", "GET /huntress/v1/agents% HTTP/1.1", auth, 400, "", true},
		{"leading double slash", "GET //huntress/v1/agents HTTP/1.1", auth, 400, "", false},
		{"inner double slash", "GET /huntress//v1/agents HTTP/1.1", auth, 400, "", false},
		{"absolute-form to another host", "GET http://evil.example/huntress/v1/agents HTTP/1.1", auth, 400, "", false},
		{"absolute-form to itself", "GET http://127.0.0.1/huntress/v1/agents HTTP/1.1", auth, 400, "", false},
		{"CONNECT", "CONNECT evil.example:443 HTTP/1.1", auth, 400, "", false},
		{"asterisk form", "OPTIONS * HTTP/1.1", auth, 400, "", false},
		{"too many header fields", "GET /huntress/v1/agents HTTP/1.1", auth + many, 400, "", false},
		{"overlong path", "GET /huntress/v1/" + strings.Repeat("a", 70<<10) + " HTTP/1.1", auth, 431, "", true},
		{"duplicate Proxy-Authorization", "GET /huntress/v1/agents HTTP/1.1", auth + "Proxy-Authorization: Bearer " + siemKey + "\r\n", 401, "", false},
		{"duplicate drop-in Authorization", "GET /infocyte/Agents HTTP/1.1", "Authorization: " + soarKey + "\r\nAuthorization: " + siemKey + "\r\n", 401, "", false},
		{"encoded letter is decoded once", "GET /huntress/v1/%61gents HTTP/1.1", auth, 200, "/v1/agents", false},
		{"Connection: Authorization cannot drop the credential", "GET /huntress/v1/account HTTP/1.1", auth + "Connection: Authorization, Proxy-Authorization\r\nAuthorization: Basic eDp5\r\n", 200, "/v1/account", false},
		{"spoofed Host still goes to the upstream", "GET /huntress/v1/account HTTP/1.1", auth, 200, "/v1/account", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.huntress.Requests()) + len(h.infocyte.Requests())
			host := "Host: evil.example\r\n"
			resp := h.raw(tc.line + "\r\n" + host + tc.headers + "Connection: close\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if !tc.byGo && (tc.status == 400 || tc.status == 401) {
				if code := resp.Header.Get("Keybroker-Error"); code == "" {
					t.Errorf("no Keybroker-Error on a refusal")
				}
			}
			reqs := append(h.huntress.Requests(), h.infocyte.Requests()...)
			got := reqs[before:]
			if tc.wantPath == "" {
				if len(got) != 0 {
					t.Errorf("the vendor received %s", got[0].Path)
				}
				return
			}
			if len(got) != 1 || got[0].Path != tc.wantPath {
				t.Fatalf("vendor got %+v, want exactly %s", got, tc.wantPath)
			}
			want := "Basic " + base64.StdEncoding.EncodeToString([]byte(huntressKey+":"+huntressSecret))
			if a := got[0].Header.Values("Authorization"); len(a) != 1 || a[0] != want {
				t.Errorf("vendor Authorization %q", a)
			}
		})
	}
}

func TestProxy_DropInCallers(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("soar:"+soarKey))
	cases := []struct {
		name, path string
		hdr        map[string]string
		vendor     func() (string, string) // path and query of the vendor's last request
	}{
		{"huntress with requests auth=(name, key)", "/huntress/v1/agents?limit=1", map[string]string{"Authorization": basic}, nil},
		{"infocyte token as access_token", "/infocyte/Agents?access_token=" + soarKey + "&filter=x", nil, nil},
		{"infocyte raw Authorization", "/infocyte/Alerts", map[string]string{"Authorization": soarKey}, nil},
		{"infocyte X-Access-Token", "/infocyte/Version", map[string]string{"X-Access-Token": soarKey}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := h.do("GET", tc.path, nil, tc.hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
			if rec["caller"] != "soar" || rec["caller_auth"] != "dropin" {
				t.Errorf("audit caller %v/%v", rec["caller"], rec["caller_auth"])
			}
			if strings.Contains(fmt.Sprint(rec["query"]), soarKey) {
				t.Error("caller key in the audit query")
			}
		})
	}
	for _, r := range append(h.huntress.Requests(), h.infocyte.Requests()...) {
		all := r.RawQuery + fmt.Sprint(r.Header)
		if strings.Contains(all, soarKey) {
			t.Errorf("the vendor saw the caller's key on %s", r.Path)
		}
		if r.Status != 200 {
			t.Errorf("vendor answered %d on %s", r.Status, r.Path)
		}
	}
}

func TestProxy_PolicyReportMode(t *testing.T) {
	enforce := newHarness(t, harnessOpts{})
	report := newHarness(t, harnessOpts{topYAML: "policy_mode: report\n"})
	r1, b1 := enforce.do("GET", "/infocyte/Version", nil, bearer(siemKey))
	contractError(t, r1, b1, 403, "caller_forbidden")
	if !strings.Contains(b1, `no allow rule for upstream \"infocyte\"`) {
		t.Errorf("reason should name the missing rule: %s", b1)
	}
	if rec := enforce.lastRecord(r1.Header.Get("X-Request-Id")); rec["policy"] != "denied" {
		t.Errorf("enforce policy %v", rec["policy"])
	}
	r2, _ := report.do("GET", "/infocyte/Version", nil, bearer(siemKey))
	if r2.StatusCode != 200 {
		t.Fatalf("report mode status %d", r2.StatusCode)
	}
	if rec := report.lastRecord(r2.Header.Get("X-Request-Id")); rec["policy"] != "would_deny" || rec["outcome"] != "forwarded" {
		t.Errorf("report record policy %v outcome %v", rec["policy"], rec["outcome"])
	}
	r3, _ := report.do("GET", "/huntress/v1/agents/3", nil, bearer(siemKey))
	if rec := report.lastRecord(r3.Header.Get("X-Request-Id")); rec["policy"] != "allowed" {
		t.Errorf("allowed call marked %v", rec["policy"])
	}
}

func TestProxy_RedirectsAreNotFollowed(t *testing.T) {
	var evilHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { evilHits.Add(1) }))
	defer evil.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, evil.URL+"/steal", http.StatusFound)
	}))
	defer redirector.Close()
	h := newHarness(t, harnessOpts{huntressURL: redirector.URL})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/agents", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || evilHits.Load() != 0 {
		t.Errorf("status %d, evil hits %d: keybroker must hand the redirect back, not follow it", resp.StatusCode, evilHits.Load())
	}
}

func TestProxy_StripsVendorSessionCookies(t *testing.T) {
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "vendor-session"})
		w.Header().Set("Keybroker-Error", "forged")
		_, _ = w.Write([]byte("{}"))
	}))
	defer vendor.Close()
	h := newHarness(t, harnessOpts{huntressURL: vendor.URL})
	resp, _ := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey))
	if resp.StatusCode != 200 || resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Keybroker-Error") != "" {
		t.Errorf("status %d, Set-Cookie %q, Keybroker-Error %q", resp.StatusCode, resp.Header.Get("Set-Cookie"), resp.Header.Get("Keybroker-Error"))
	}
}
