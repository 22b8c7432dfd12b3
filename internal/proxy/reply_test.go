package proxy_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/keybroker/keybroker/internal/vendortest"
)

// noFollow is a client that hands back redirects instead of following them.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// get sends a GET as soar, with the Host header host (the name the caller
// used for keybroker), and returns the reply with its body.
func (h *harness) getAs(path, host string, hdr map[string]string) (*http.Response, string) {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.srv.URL+path, nil)
	req.Host = host
	req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	h.mu.Lock()
	h.bodies = append(h.bodies, string(b)+fmtHeader(resp.Header))
	h.mu.Unlock()
	return resp, string(b)
}

func fmtHeader(h http.Header) string {
	var b strings.Builder
	_ = h.Write(&b)
	return b.String()
}

// TestReply_VendorLinksNeverHandTheCredentialToTheCaller: a vendor that
// puts the injected credential into redirects, Content-Location or any
// other header: the caller gets keybroker's URL for links on the vendor's
// own origin, never the credential parameter, and no header that holds it.
func TestReply_VendorLinksNeverHandTheCredentialToTheCaller(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	const host = "keybroker.internal:8443"
	cases := []struct {
		path   string
		header string
		want   string // "" = the header must be absent
	}{
		{"/rogue/redirect", "Location", "http://" + host + "/rogue/v1/things/1?page=2"},
		{"/rogue/redirect-relative", "Location", "http://" + host + "/rogue/v1/things/2?page=3"},
		{"/rogue/redirect-away", "Location", "https://elsewhere.example/steal?x=1"},
		{"/rogue/redirect-encoded", "Location", "http://" + host + "/rogue/v1/things/3?page=4"},
		{"/rogue/content-location", "Content-Location", "http://" + host + "/rogue/v1/things/1"},
		{"/rogue/echo", "X-Echo-Key", ""},
		{"/rogue/echo", "X-Debug-Url", ""},
		{"/rogue/echo", "Link", ""},
	}
	for _, tc := range cases {
		t.Run(tc.path+" "+tc.header, func(t *testing.T) {
			resp, _ := h.getAs(tc.path, host, nil)
			if resp.StatusCode != 200 && resp.StatusCode != 302 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get(tc.header); got != tc.want {
				t.Errorf("%s = %q, want %q", tc.header, got, tc.want)
			}
			if strings.Contains(fmtHeader(resp.Header), rogueKey) {
				t.Errorf("a reply header carries the credential: %s", fmtHeader(resp.Header))
			}
		})
	}
	// The vendor did get the credential, each time (so the test is real).
	for _, r := range h.rogue.Requests() {
		if r.Status == http.StatusUnauthorized {
			t.Errorf("rogue refused the credential on %s", r.Path)
		}
	}
	if e := h.logs.FilterMessage("dropped a vendor reply header that carried the injected credential").Len(); e < 3 {
		t.Errorf("%d drop warnings logged, want one per echoed header", e)
	}
}

// TestReply_EchoedCredentialDroppedOnEveryAuthType: the same echo and
// redirect from a basic (Huntress) and a raw-header (Infocyte) upstream.
func TestReply_EchoedCredentialDroppedOnEveryAuthType(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		w.Header().Set("X-Echo-Auth", a)
		if raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "Basic ")); err == nil {
			_, pass, _ := strings.Cut(string(raw), ":")
			w.Header().Set("X-Echo-Secret", pass)
		}
		w.Header().Set("Location", "http://"+r.Host+"/v1/next?access_token="+a+"&n=1")
		w.WriteHeader(http.StatusFound)
	}))
	defer echo.Close()
	h := newHarness(t, harnessOpts{huntressURL: echo.URL})
	resp, _ := h.getAs("/huntress/v1/agents", "kb.local", nil)
	if resp.Header.Get("X-Echo-Auth") != "" || resp.Header.Get("X-Echo-Secret") != "" {
		t.Errorf("echoed credential headers reached the caller: %v", resp.Header)
	}
	if got := resp.Header.Get("Location"); got != "http://kb.local/huntress/v1/next?n=1" {
		t.Errorf("Location %q", got)
	}
}

// TestReply_PaginationLinksLeadBackThroughKeybroker: a drop-in client that
// follows Huntress's absolute next_page_url (as requests-based clients do)
// stays behind keybroker and pages through everything; its key never goes
// to the vendor. Also gzip-compressed replies, and the credential taken
// out of links on any origin.
func TestReply_PaginationLinksLeadBackThroughKeybroker(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run("gzip="+strconv.FormatBool(gz), func(t *testing.T) {
			h := newHarness(t, harnessOpts{huntress: vendortest.HuntressOptions{Gzip: gz}})
			basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("soar:"+soarKey))
			next := h.srv.URL + "/huntress/v1/agents?limit=10"
			seen := 0
			for pages := 0; next != "" && pages < 10; pages++ {
				if !strings.HasPrefix(next, h.srv.URL+"/huntress/v1/agents?") {
					t.Fatalf("next_page_url %q leads away from keybroker", next)
				}
				req, _ := http.NewRequest("GET", next, nil)
				req.Header.Set("Authorization", basic)
				req.Header.Set("Accept-Encoding", "gzip, br") // set by hand: Go will not decompress for us
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("page %d: status %d", pages, resp.StatusCode)
				}
				if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(raw)) {
					t.Errorf("Content-Length %s for %d bytes", cl, len(raw))
				}
				if resp.Header.Get("Content-Encoding") == "gzip" {
					zr, err := gzip.NewReader(bytes.NewReader(raw))
					if err != nil {
						t.Fatal(err)
					}
					raw, _ = io.ReadAll(zr)
				}
				var page struct {
					Agents     []map[string]any `json:"agents"`
					Pagination struct {
						NextPageURL *string `json:"next_page_url"`
					} `json:"pagination"`
				}
				if err := json.Unmarshal(raw, &page); err != nil {
					t.Fatalf("page %d is not JSON: %v", pages, err)
				}
				seen += len(page.Agents)
				next = ""
				if page.Pagination.NextPageURL != nil {
					next = *page.Pagination.NextPageURL
				}
			}
			if seen != 42 {
				t.Errorf("paged through %d agents, want all 42", seen)
			}
			for _, r := range h.huntress.Requests() {
				if strings.Contains(fmtHeader(r.Header)+r.RawQuery, soarKey) || r.Status != 200 {
					t.Errorf("vendor got status %d or the caller key on %s", r.Status, r.Path)
				}
			}
		})
	}

	h := newHarness(t, harnessOpts{})
	// A link away from the upstream is dropped (null): a drop-in client
	// must never be handed a URL that is not keybroker's.
	for path, want := range map[string]any{
		"/rogue/page":      "http://kb.local/rogue/v1/things?page=2",
		"/rogue/page-away": nil,
	} {
		resp, body := h.getAs(path, "kb.local", nil)
		var doc struct {
			Pagination map[string]any `json:"pagination"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if got, ok := doc.Pagination["next_page_url"]; !ok || got != want {
			t.Errorf("%s: next_page_url %v, want %v", path, got, want)
		}
		if resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("%s: Content-Length %s for %d bytes", path, resp.Header.Get("Content-Length"), len(body))
		}
	}
}

// TestReply_LinksAreRewrittenAtAnySizeAndWhateverTheContentType: a JSON
// reply larger than any buffer, and one labelled text/plain, get their
// link rewritten all the same; every other byte is the vendor's.
func TestReply_LinksAreRewrittenAtAnySizeAndWhateverTheContentType(t *testing.T) {
	var big bytes.Buffer
	big.WriteString(`{"agents":[`)
	for i := 0; big.Len() < 9<<20; i++ {
		if i > 0 {
			big.WriteByte(',')
		}
		big.WriteString(`{"id":` + strconv.Itoa(i) + `,"hostname":"` + strings.Repeat("h", 100) + `"}`)
	}
	var vendorURL string
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		link := `"pagination":{"next_page_url":"` + vendorURL + `/v1/agents?page_token=x"}}`
		switch r.URL.Path {
		case "/v1/big":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(append(big.Bytes(), []byte(`],`+link)...))
		case "/v1/text":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(`{` + link))
		case "/v1/plain":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("not json: " + vendorURL + "/v1/agents"))
		}
	}))
	defer vendor.Close()
	vendorURL = vendor.URL
	h := newHarness(t, harnessOpts{huntressURL: vendor.URL})
	_, body := h.getAs("/huntress/v1/big", "kb.local", nil)
	want := big.String() + `],"pagination":{"next_page_url":"http://kb.local/huntress/v1/agents?page_token=x"}}`
	if body != want {
		t.Errorf("a %d-byte reply: got %d bytes ending %q, want its link rewritten and nothing else changed", big.Len(), len(body), body[max(0, len(body)-120):])
	}
	_, body = h.getAs("/huntress/v1/text", "kb.local", nil)
	if body != `{"pagination":{"next_page_url":"http://kb.local/huntress/v1/agents?page_token=x"}}` {
		t.Errorf("a text/plain JSON reply: %s", body)
	}
	_, body = h.getAs("/huntress/v1/plain", "kb.local", nil)
	if body != "not json: "+vendor.URL+"/v1/agents" {
		t.Errorf("a reply that is not JSON was altered: %s", body)
	}
}
