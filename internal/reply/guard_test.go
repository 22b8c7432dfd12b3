package reply

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const secret = "s3cr3t-injected-value"

func newGuard(t *testing.T, target string) (*Guard, *observer.ObservedLogs) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	return NewGuard(Options{Upstream: "huntress", Target: u, CredentialParams: []string{"access_token"},
		Links: []string{"pagination.next_page_url"}, Log: zap.New(core)}), logs
}

func reply(t *testing.T, vendorURL, ct, body string, hdr http.Header) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", vendorURL, nil)
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Content-Type", ct)
	return &http.Response{StatusCode: 200, Header: hdr, Request: req, ContentLength: int64(len(body)),
		Body: io.NopCloser(strings.NewReader(body))}
}

var call = Call{RequestID: "r1", Origin: Origin{Scheme: "http", Host: "kb.internal:8080"}, Leaks: []string{secret}}

// TestGuard_LinksOnTheVendorsOriginComeBackThroughKeybroker: headers and
// JSON link fields, default ports folded, host case ignored, credential
// parameters dropped from every link.
func TestGuard_LinksOnTheVendorsOriginComeBackThroughKeybroker(t *testing.T) {
	g, _ := newGuard(t, "https://api.huntress.io/v1")
	for _, tc := range []struct{ in, want string }{
		{"https://api.huntress.io/v1/agents?page_token=x", "http://kb.internal:8080/huntress/agents?page_token=x"},
		{"https://API.Huntress.io:443/v1/agents", "http://kb.internal:8080/huntress/agents"},
		{"/v1/agents?access_token=k&limit=2", "http://kb.internal:8080/huntress/agents?limit=2"},
		{"https://api.huntress.io/v2/other", "https://api.huntress.io/v2/other"},
		{"https://elsewhere.example/v1/agents?ACCESS_TOKEN=k", "https://elsewhere.example/v1/agents"},
	} {
		resp := reply(t, "https://api.huntress.io/v1/agents", "application/json", "{}", http.Header{"Location": {tc.in}})
		g.Guard(resp, call)
		if got := resp.Header.Get("Location"); got != tc.want {
			t.Errorf("Location %q became %q, want %q", tc.in, got, tc.want)
		}
	}
	body := `{"agents":[1],"pagination":{"next_page_url":"https://api.huntress.io/v1/agents?page_token=Mg","n":1}}`
	resp := reply(t, "https://api.huntress.io/v1/agents", "application/json; charset=utf-8", body, nil)
	g.Guard(resp, call)
	out, _ := io.ReadAll(resp.Body)
	want := `{"agents":[1],"pagination":{"next_page_url":"http://kb.internal:8080/huntress/agents?page_token=Mg","n":1}}`
	if string(out) != want || resp.ContentLength != int64(len(want)) {
		t.Errorf("body %s (length %d), want %s", out, resp.ContentLength, want)
	}
}

// TestGuard_NoHeaderCarriesAnInjectedValue: a header that echoes the
// credential is dropped and logged by name only; a link that still holds
// it after its query is cleaned is dropped.
func TestGuard_NoHeaderCarriesAnInjectedValue(t *testing.T) {
	g, logs := newGuard(t, "https://api.huntress.io/v1")
	resp := reply(t, "https://api.huntress.io/v1/agents", "text/plain", "x", http.Header{
		"X-Debug":  {"auth=" + secret},
		"Location": {"https://api.huntress.io/v1/" + secret + "/agents"},
		"X-Fine":   {"ok"},
	})
	g.Guard(resp, call)
	if resp.Header.Get("X-Debug") != "" || resp.Header.Get("Location") != "" || resp.Header.Get("X-Fine") != "ok" {
		t.Errorf("headers after the guard: %v", resp.Header)
	}
	var all bytes.Buffer
	for _, e := range logs.All() {
		all.WriteString(e.Message + " " + e.ContextMap()["header"].(string) + "\n")
	}
	if !strings.Contains(all.String(), "X-Debug") || strings.Contains(all.String(), secret) {
		t.Errorf("log: %s", all.String())
	}
}
