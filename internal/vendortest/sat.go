package vendortest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// SAT fakes Huntress Managed Security Awareness Training (mycurricula.com),
// an OAuth2 client-credentials vendor:
//   - POST /oauth/token takes grant_type=client_credentials with client_id
//     and client_secret in the form body (as pyhuntress sends them), and
//     answers {"access_token", "token_type":"Bearer", "expires_in"}, or 401
//     {"error":"invalid_client"};
//   - /api/v1/... takes Authorization: Bearer <token> and refuses a token
//     that is unknown, expired or revoked with 401, and a request whose
//     Accept excludes the JSON:API media type with 406;
//   - it counts token requests.
type SAT struct {
	recorder
	*httptest.Server

	mu     sync.Mutex
	id     string
	secret string
	ttl    time.Duration
	tokens map[string]satToken
	issued map[string]bool // every token ever issued
	// down answers the token endpoint 503; slow holds its answers.
	down bool
	slow time.Duration
	// oneLive: a new token revokes the client's earlier ones.
	oneLive bool
	// echo: a refusal repeats the presented secret in its error and
	// error_description, as some vendors do.
	echo       bool
	tokenCalls int
	refused    int
}

type satToken struct {
	expires time.Time
}

// NewSAT starts the fake on a loopback port; tokens live ttl.
func NewSAT(clientID, clientSecret string, ttl time.Duration) *SAT {
	s := &SAT{id: clientID, secret: clientSecret, ttl: ttl, tokens: map[string]satToken{}, issued: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// SetSecret rotates the client secret the token endpoint accepts. Tokens
// issued before stay valid until they expire, as with most vendors.
func (s *SAT) SetSecret(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secret = secret
}

// RevokeAll revokes every token issued so far.
func (s *SAT) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]satToken{}
}

// SetDown makes the token endpoint answer 503 (or not).
func (s *SAT) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// SetSlow holds the token endpoint's answers this long.
func (s *SAT) SetSlow(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slow = d
}

// SetOneLiveToken makes each new token revoke the earlier ones.
func (s *SAT) SetOneLiveToken(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oneLive = on
}

// SetEcho makes a refused token request repeat the client secret it was
// sent in "error" and "error_description" (seen in the wild:
// bad_client_secret_<value>).
func (s *SAT) SetEcho(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.echo = on
}

// TokenRequests returns how many token requests came (any outcome).
func (s *SAT) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenCalls
}

// Tokens returns every token issued so far (for leak checks).
func (s *SAT) Tokens() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]bool, len(s.issued))
	for k := range s.issued {
		out[k] = true
	}
	return out
}

// Refused returns how many API calls were refused with 401.
func (s *SAT) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

func (s *SAT) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var status int
	switch {
	case r.URL.Path == "/oauth/token":
		status = s.token(w, r, body)
	case strings.HasPrefix(r.URL.Path, "/api/v1/"):
		status = s.api(w, r)
	default:
		status = writeJSON(w, http.StatusNotFound, map[string]any{"errors": []map[string]string{{"status": "404", "title": "Not Found"}}})
	}
	s.add(r, body, status)
}

func (s *SAT) token(w http.ResponseWriter, r *http.Request, body []byte) int {
	s.mu.Lock()
	s.tokenCalls++
	down, slow := s.down, s.slow
	s.mu.Unlock()
	if slow > 0 {
		time.Sleep(slow)
	}
	if down {
		return writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		return writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("grant_type") != "client_credentials" {
		return writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	okID := subtle.ConstantTimeCompare([]byte(form.Get("client_id")), []byte(s.id)) == 1
	okSecret := subtle.ConstantTimeCompare([]byte(form.Get("client_secret")), []byte(s.secret)) == 1
	if !okID || !okSecret {
		if s.echo {
			sent := form.Get("client_secret")
			return writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "bad_client_secret_" + sent,
				"error_description": "the client secret " + sent + " is not valid"})
		}
		return writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
	}
	if s.oneLive {
		s.tokens = map[string]satToken{}
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.tokens[tok] = satToken{expires: time.Now().Add(s.ttl)}
	s.issued[tok] = true
	return writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer",
		"expires_in": int(s.ttl / time.Second), "scope": form.Get("scope")})
}

func (s *SAT) api(w http.ResponseWriter, r *http.Request) int {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	t, known := s.tokens[tok]
	valid := ok && known && time.Now().Before(t.expires)
	if !valid {
		s.refused++
	}
	s.mu.Unlock()
	if !valid {
		return writeJSON(w, http.StatusUnauthorized, map[string]any{"errors": []map[string]string{{"status": "401", "title": "Unauthorized"}}})
	}
	// JSON:API: the media type (or any) must be acceptable to the client.
	if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "application/vnd.api+json") && !strings.Contains(a, "*/*") && !strings.Contains(a, "application/*") {
		return writeJSON(w, http.StatusNotAcceptable, map[string]any{"errors": []map[string]string{{"status": "406", "title": "Not Acceptable"}}})
	}
	w.Header().Set("Content-Type", "application/vnd.api+json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(map[string]any{"data": []map[string]any{{"type": "accounts", "id": "1",
		"attributes": map[string]string{"name": "Example MSP"}}}})
	return http.StatusOK
}
