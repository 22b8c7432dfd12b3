package proxy_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// linkVendor answers each path with the body the test gives it, with
// {V} replaced by the vendor's own origin (http://127.0.0.1:PORT) and {P}
// by its port.
func linkVendor(t *testing.T, replies map[string]func(w http.ResponseWriter, origin, port string)) *httptest.Server {
	t.Helper()
	var v *httptest.Server
	v = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := replies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		f(w, v.URL, v.URL[strings.LastIndexByte(v.URL, ':')+1:])
	}))
	t.Cleanup(v.Close)
	return v
}

func jsonReply(body string) func(w http.ResponseWriter, origin, port string) {
	return func(w http.ResponseWriter, origin, port string) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, strings.NewReplacer("{V}", origin, "{P}", port).Replace(body))
	}
}

func compressed(enc, body string) func(w http.ResponseWriter, origin, port string) {
	return func(w http.ResponseWriter, origin, port string) {
		var b bytes.Buffer
		var zw io.WriteCloser
		switch enc {
		case "gzip":
			zw = gzip.NewWriter(&b)
		case "deflate":
			zw = zlib.NewWriter(&b)
		case "raw-deflate": // not what "deflate" means in HTTP: not readable
			zw, _ = flate.NewWriter(&b, 5)
			enc = "deflate"
		}
		io.WriteString(zw, strings.NewReplacer("{V}", origin, "{P}", port).Replace(body))
		zw.Close()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", enc)
		w.Write(b.Bytes())
	}
}

// TestLinks_JudgedByWhatAJSONDecoderSees: every spelling of the link field
// and of the vendor's origin is judged by its meaning. On the upstream's
// origin it comes back through keybroker; anywhere else it is null. No
// caller ever gets a link that is not keybroker's.
func TestLinks_JudgedByWhatAJSONDecoderSees(t *testing.T) {
	const kb = "http://kb.local/huntress/v1/agents?page=2"
	cases := []struct {
		name, body string
		want       []any // every next_page_url, in order (repeated keys too)
	}{
		{"plain", `{"pagination":{"next_page_url":"{V}/v1/agents?page=2"}}`, []any{kb}},
		{"escaped key", `{"pagination":{"next\u005fpage_url":"{V}/v1/agents?page=2"}}`, []any{kb}},
		{"escaped parent key", `{"pag\u0069nation":{"next_page_url":"{V}/v1/agents?page=2"}}`, []any{kb}},
		{"escaped value", `{"pagination":{"next_page_url":"http:\/\/127.0.0.1:{P}\/v1\/agents?page=2"}}`, []any{kb}},
		{"unicode-escaped value", `{"pagination":{"next_page_url":"\u0068ttp://127.0.0.1:{P}/v1/agents?page=2"}}`, []any{kb}},
		{"userinfo", `{"pagination":{"next_page_url":"http://x@127.0.0.1:{P}/v1/agents?page=2"}}`, []any{kb}},
		{"host case and trailing dot", `{"pagination":{"next_page_url":"HTTP://127.0.0.1.:{P}/v1/agents?page=2"}}`, []any{kb}},
		{"relative", `{"pagination":{"next_page_url":"/v1/agents?page=2"}}`, []any{kb}},
		{"another spelling of the host", `{"pagination":{"next_page_url":"http://localhost:{P}/v1/agents?page=2"}}`, []any{nil}},
		{"another host", `{"pagination":{"next_page_url":"https://evil.example/v1/agents?page=2"}}`, []any{nil}},
		{"another port", `{"pagination":{"next_page_url":"http://127.0.0.1:1/v1/agents?page=2"}}`, []any{nil}},
		{"protocol-relative elsewhere", `{"pagination":{"next_page_url":"//evil.example/v1/agents"}}`, []any{nil}},
		{"unparsable", `{"pagination":{"next_page_url":"http://[::1/v1"}}`, []any{nil}},
		{"repeated key: both judged", `{"pagination":{"next_page_url":"https://evil.example/x","next_page_url":"{V}/v1/agents?page=2"}}`, []any{nil, kb}},
		{"null stays null", `{"pagination":{"next_page_url":null}}`, []any{nil}},
		{"in an array of pages", `[{"pagination":{"next_page_url":"{V}/v1/agents?page=2"}},{"pagination":{"next_page_url":"https://evil.example/"}}]`, []any{kb, nil}},
	}
	replies := map[string]func(http.ResponseWriter, string, string){}
	for i, tc := range cases {
		replies["/v1/c"+string(rune('a'+i))] = jsonReply(tc.body)
		replies["/v1/gzip"+string(rune('a'+i))] = compressed("gzip", tc.body)
		replies["/v1/deflate"+string(rune('a'+i))] = compressed("deflate", tc.body)
	}
	v := linkVendor(t, replies)
	h := newHarness(t, harnessOpts{huntressURL: v.URL})
	for i, tc := range cases {
		for _, kind := range []string{"c", "gzip", "deflate"} {
			resp, body := h.getAs("/huntress/v1/"+kind+string(rune('a'+i)), "kb.local", nil)
			got := linkValues(t, body)
			if resp.StatusCode != 200 || !equalAny(got, tc.want) {
				t.Errorf("%s (%s): status %d, next_page_url %v, want %v\n%s", tc.name, kind, resp.StatusCode, got, tc.want, body)
			}
			if strings.Contains(body, "evil.example") || strings.Contains(body, "localhost:") || strings.Contains(body, "127.0.0.1") {
				t.Errorf("%s (%s): a link away from keybroker reached the caller: %s", tc.name, kind, body)
			}
		}
	}
}

// linkValues decodes body as a JSON decoder would, keeping every
// next_page_url, repeated keys included.
func linkValues(t *testing.T, body string) []any {
	t.Helper()
	var out []any
	dec := json.NewDecoder(strings.NewReader(body))
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			for dec.More() {
				k, _ := dec.Token()
				if k == "next_page_url" {
					var v any
					if err := dec.Decode(&v); err != nil {
						return err
					}
					out = append(out, v)
					continue
				}
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token()
		case json.Delim('['):
			for dec.More() {
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token()
		}
		return err
	}
	if err := walk(); err != nil {
		t.Errorf("the reply is not JSON: %v\n%s", err, body)
	}
	return out
}

func equalAny(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestLinks_AReplyThatIsNotJSONAfterAllIsCutOff: a streamed reply that
// starts as JSON and breaks after bytes went out is cut off, never
// completed with the vendor's link; an encoding keybroker cannot read is a
// 502 that names it.
func TestLinks_AReplyThatIsNotJSONAfterAllIsCutOff(t *testing.T) {
	big := `{"agents":[` + strings.Repeat(`{"id":1,"hostname":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},`, 5000)
	v := linkVendor(t, map[string]func(http.ResponseWriter, string, string){
		"/v1/broken": func(w http.ResponseWriter, origin, port string) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, big+`]] oops, "pagination":{"next_page_url":"`+origin+`/v1/agents?page=2"}}`)
		},
		"/v1/br": func(w http.ResponseWriter, origin, port string) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "br")
			io.WriteString(w, "\x1b\x00\x00")
		},
		"/v1/made-up": func(w http.ResponseWriter, origin, port string) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "x-PLANTED_encoding_text")
			io.WriteString(w, "{}")
		},
	})
	h := newHarness(t, harnessOpts{huntressURL: v.URL})
	req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/broken", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || strings.Contains(string(body), "next_page_url") || strings.Contains(string(body), v.URL) {
		t.Errorf("a reply that broke mid-way was completed (read error %v, %d bytes)", err, len(body))
	}
	resp, out := h.getAs("/huntress/v1/br", "kb.local", nil)
	contractError(t, resp, out, http.StatusBadGateway, "upstream_unreachable")
	if !strings.Contains(out, "(br)") {
		t.Errorf("the 502 does not name the encoding: %s", out)
	}
	// An encoding nobody registered is the vendor's own text: not repeated.
	resp, out = h.getAs("/huntress/v1/made-up", "kb.local", nil)
	contractError(t, resp, out, http.StatusBadGateway, "upstream_unreachable")
	if strings.Contains(strings.ToLower(out), "planted_encoding") || !strings.Contains(out, "(an unknown one)") {
		t.Errorf("the 502 repeats the vendor's Content-Encoding: %s", out)
	}
}
