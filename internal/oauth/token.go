package oauth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// MaxTokenRequestBytes bounds a token request's body.
const MaxTokenRequestBytes = 16 << 10

// Errors of keybroker's token endpoint, as RFC 6749 §5.2 names them.
const (
	ErrInvalidRequest       = "invalid_request"
	ErrInvalidClient        = "invalid_client"
	ErrUnsupportedGrantType = "unsupported_grant_type"
)

// Request is a client-credentials token request, read and checked.
type Request struct {
	ClientID, ClientSecret string
	// Basic: the credentials came as HTTP Basic.
	Basic bool
	// Scope as asked (accepted and ignored: the upstream's scope is what
	// the vendor sees).
	Scope string
}

// RequestError is a token request keybroker refuses: the OAuth error code
// and a description for the client (never a value it sent).
type RequestError struct {
	Status      int
	Code        string
	Description string
	// Basic: the client tried HTTP Basic (a 401 then says so in
	// WWW-Authenticate).
	Basic bool
}

func (e *RequestError) Error() string { return e.Code + ": " + e.Description }

func invalid(desc string) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Code: ErrInvalidRequest, Description: desc}
}

// ReadRequest reads a token request (RFC 6749 §4.4.2): a POST with a
// form-encoded body, grant_type client_credentials, and the client's
// credentials in the body or in HTTP Basic (form-encoded, then base64), not
// both. A parameter sent twice is refused, as §3.2 says.
func ReadRequest(r *http.Request) (Request, *RequestError) {
	if r.Method != http.MethodPost {
		return Request{}, invalid("the token endpoint takes POST")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return Request{}, invalid("the body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxTokenRequestBytes+1))
	if err != nil {
		return Request{}, invalid("could not read the request body")
	}
	if len(body) > MaxTokenRequestBytes {
		return Request{}, invalid("the request body is over " + strconv.Itoa(MaxTokenRequestBytes) + " bytes")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return Request{}, invalid("the body is not form-encoded")
	}
	for k, vs := range form {
		if len(vs) > 1 {
			return Request{}, invalid("parameter " + strconv.Quote(bound(k)) + " is sent more than once")
		}
	}
	var req Request
	req.Scope = form.Get("scope")
	switch gt := form.Get("grant_type"); gt {
	case "":
		return Request{}, invalid("grant_type is missing")
	case "client_credentials":
	default:
		return Request{}, &RequestError{Status: http.StatusBadRequest, Code: ErrUnsupportedGrantType,
			Description: "only grant_type client_credentials is served"}
	}
	auths := r.Header.Values("Authorization")
	if len(auths) > 1 {
		return Request{}, invalid("more than one Authorization header")
	}
	inBody := form.Has("client_secret")
	if len(auths) == 1 {
		scheme, cred, _ := strings.Cut(strings.TrimSpace(auths[0]), " ")
		if !strings.EqualFold(scheme, "Basic") {
			return Request{}, &RequestError{Status: http.StatusUnauthorized, Code: ErrInvalidClient,
				Description: "client authentication is HTTP Basic or client_id and client_secret in the body"}
		}
		if inBody {
			return Request{}, invalid("client credentials in both the Authorization header and the body; use one")
		}
		id, secret, ok := basic(strings.TrimSpace(cred))
		if !ok {
			return Request{}, &RequestError{Status: http.StatusUnauthorized, Code: ErrInvalidClient, Basic: true,
				Description: "the Basic credentials are not base64(client_id:client_secret)"}
		}
		if bid := form.Get("client_id"); form.Has("client_id") && bid != id {
			return Request{}, invalid("client_id in the body is not the one in the Authorization header")
		}
		req.ClientID, req.ClientSecret, req.Basic = id, secret, true
		return req, nil
	}
	req.ClientID, req.ClientSecret = form.Get("client_id"), form.Get("client_secret")
	if req.ClientID == "" || req.ClientSecret == "" {
		return Request{}, &RequestError{Status: http.StatusUnauthorized, Code: ErrInvalidClient,
			Description: "client authentication is missing: send client_id and client_secret"}
	}
	return req, nil
}

// basic decodes HTTP Basic client credentials: each part is form-encoded
// before the pair is base64-encoded (RFC 6749 §2.3.1).
func basic(v string) (id, secret string, ok bool) {
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return "", "", false
	}
	i, s, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", false
	}
	if id, err = url.QueryUnescape(i); err != nil {
		return "", "", false
	}
	if secret, err = url.QueryUnescape(s); err != nil {
		return "", "", false
	}
	return id, secret, id != "" && secret != ""
}

// WriteToken writes a token reply (RFC 6749 §5.1).
func WriteToken(w http.ResponseWriter, tok string, expiresIn int) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	body, _ := json.Marshal(struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}{tok, "Bearer", expiresIn})
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
}

// WriteError writes an error reply in OAuth's shape (RFC 6749 §5.2).
// Headers already set (Keybroker-Error, X-Request-Id, Retry-After) stay.
func WriteError(w http.ResponseWriter, e *RequestError) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if e.Status == http.StatusUnauthorized {
		if e.Basic {
			h.Set("WWW-Authenticate", `Basic realm="keybroker"`)
		} else {
			h.Del("WWW-Authenticate")
		}
	}
	// Written as it reads ("<key>"), not HTML-escaped: the reply is JSON.
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.Code, e.Description})
	w.WriteHeader(e.Status)
	_, _ = w.Write(body.Bytes())
}

func bound(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
