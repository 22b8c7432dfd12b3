package vendortest

import (
	"crypto/subtle"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

// Infocyte fakes an Infocyte HUNT instance (LoopBack 3) under /api. Like
// LoopBack it takes the token from the first place it finds one: the
// access_token query parameter, then the Authorization header (raw, no
// scheme; "Bearer <raw>" fails because LoopBack base64-decodes bearer
// tokens), then X-Access-Token. A wrong token anywhere first wins, so a
// caller's token leaking through would be caught.
type Infocyte struct {
	recorder
	*httptest.Server

	mu      sync.Mutex
	token   string
	expired map[string]bool
}

// NewInfocyte starts the fake on a loopback port.
func NewInfocyte(token string) *Infocyte {
	f := &Infocyte{token: token, expired: map[string]bool{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

// BaseURL returns the base URL including /api, as configured in keybroker.
func (f *Infocyte) BaseURL() string { return f.Server.URL + "/api" }

// SetToken rotates the accepted token; the old one answers INVALID_TOKEN.
func (f *Infocyte) SetToken(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expired[f.token] = true
	f.token = token
}

func (f *Infocyte) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	status := f.handle(w, r)
	f.add(r, body, status)
}

func loopbackError(w http.ResponseWriter, status int, message, code string) int {
	return writeJSON(w, status, map[string]any{"error": map[string]any{
		"statusCode": status, "name": "Error", "message": message, "code": code}})
}

func (f *Infocyte) handle(w http.ResponseWriter, r *http.Request) int {
	tok, found := "", false
	if v, ok := r.URL.Query()["access_token"]; ok {
		tok, found = v[0], true
	} else if v := r.Header.Values("Authorization"); len(v) > 0 {
		tok, found = v[0], true
	} else if v := r.Header.Get("X-Access-Token"); v != "" {
		tok, found = v, true
	}
	f.mu.Lock()
	current, expired := f.token, f.expired[tok]
	f.mu.Unlock()
	switch {
	case found && expired:
		return loopbackError(w, http.StatusUnauthorized, "Invalid Access Token", "INVALID_TOKEN")
	case !found || subtle.ConstantTimeCompare([]byte(tok), []byte(current)) != 1:
		return loopbackError(w, http.StatusUnauthorized, "Authorization Required", "AUTHORIZATION_REQUIRED")
	}

	path, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if !ok {
		return loopbackError(w, http.StatusNotFound, "Shared class \"\" has no method handling "+r.Method+" "+r.URL.Path, "MODEL_NOT_FOUND")
	}
	parts := strings.Split(path, "/")
	switch {
	case r.Method == http.MethodGet && path == "Version":
		return writeJSON(w, http.StatusOK, map[string]string{"serverVersion": "2.11.0.2400"})
	case r.Method == http.MethodGet && path == "Agents":
		return writeJSON(w, http.StatusOK, []map[string]any{
			{"id": "a1", "hostname": "ws-01", "active": true}, {"id": "a2", "hostname": "ws-02", "active": false}})
	case r.Method == http.MethodGet && path == "Agents/count":
		return writeJSON(w, http.StatusOK, map[string]int{"count": 2})
	case r.Method == http.MethodGet && path == "Alerts":
		return writeJSON(w, http.StatusOK, []map[string]any{{"id": "al1", "name": "Suspicious PowerShell", "severity": "high"}})
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "targets" && parts[2] == "scan":
		if parts[1] != "t1" {
			return loopbackError(w, http.StatusNotFound, "Unknown \"Target\" id \""+parts[1]+"\".", "MODEL_NOT_FOUND")
		}
		return writeJSON(w, http.StatusOK, map[string]string{"userTaskId": "ut-" + parts[1]})
	}
	return loopbackError(w, http.StatusNotFound, "Shared class has no method handling "+r.Method+" /"+path, "MODEL_NOT_FOUND")
}
