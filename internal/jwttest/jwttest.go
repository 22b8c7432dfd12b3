// Package jwttest is a token issuer for keybroker's tests, shaped like a
// Kubernetes cluster's service-account issuer: an RSA signing key with a
// kid, its JWKS (as a file, or served with OIDC discovery on loopback,
// counting fetches), and tokens with any claims, including the broken and
// forged ones an attacker would send. Imported only by tests.
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Issuer signs tokens.
type Issuer struct {
	// URL is the issuer (iss); with Serve, its loopback server.
	URL string
	// KeyID names the current signing key.
	KeyID string

	t       testing.TB
	mu      sync.Mutex
	key     crypto.Signer
	keys    []jose.JSONWebKey // published
	srv     *httptest.Server
	fetches atomic.Int64
}

// New returns an issuer named url with one RSA key ("key-1").
func New(t testing.TB, url string) *Issuer {
	t.Helper()
	is := &Issuer{URL: url, t: t}
	is.Rotate("key-1")
	return is
}

// Serve serves OIDC discovery and the JWKS on a loopback port; the
// issuer's URL becomes that server's.
func Serve(t testing.TB) *Issuer {
	t.Helper()
	is := &Issuer{t: t}
	is.srv = httptest.NewServer(http.HandlerFunc(is.serve))
	t.Cleanup(is.srv.Close)
	is.URL = is.srv.URL
	is.Rotate("key-1")
	return is
}

func (is *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.URL, "jwks_uri": is.URL + "/openid/v1/jwks"})
	case "/openid/v1/jwks":
		is.fetches.Add(1)
		_, _ = w.Write(is.JWKS())
	default:
		http.NotFound(w, r)
	}
}

// Fetches counts the JWKS fetches served.
func (is *Issuer) Fetches() int64 { return is.fetches.Load() }

// Rotate makes a new RSA key the signing key, published beside the old.
func (is *Issuer) Rotate(kid string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		is.t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.key, is.KeyID = k, kid
	is.keys = append(is.keys, jose.JSONWebKey{Key: k.Public(), KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"})
}

// JWKS is the published key set.
func (is *Issuer) JWKS() []byte {
	is.mu.Lock()
	defer is.mu.Unlock()
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: is.keys})
	return b
}

// WriteJWKS writes the key set to path (a Kubernetes jwks_file).
func (is *Issuer) WriteJWKS(path string) {
	is.t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, is.JWKS(), 0o600); err != nil {
		is.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		is.t.Fatal(err)
	}
}

// PublicKeyPEM is the signing key's public half in PEM, for the HS256
// "public key as the HMAC secret" attack.
func (is *Issuer) PublicKeyPEM() []byte {
	is.mu.Lock()
	defer is.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(is.key.Public())
	if err != nil {
		is.t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Claims are the standard claims of a service-account token for
// subject and audience, living ttl from now.
func (is *Issuer) Claims(subject, audience string, ttl time.Duration) map[string]any {
	now := time.Now()
	ns, name := "", ""
	if parts := strings.Split(subject, ":"); len(parts) == 4 {
		ns, name = parts[2], parts[3]
	}
	return map[string]any{"iss": is.URL, "sub": subject, "aud": []string{audience},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": name, "uid": "0a1b"}}}
}

// Sign signs claims with the current key (RS256, with its kid).
func (is *Issuer) Sign(claims map[string]any) string {
	is.mu.Lock()
	key, kid := is.key, is.KeyID
	is.mu.Unlock()
	return SignWith(is.t, jose.RS256, key, kid, claims)
}

// SignWith signs claims with any key and kid (forgeries).
func SignWith(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Unsigned is claims with alg none (no signature).
func Unsigned(kid string, claims map[string]any) string {
	head, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT", "kid": kid})
	payload, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
}

// OtherRSA is a fresh RSA key (a forger's).
func OtherRSA(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// OtherEC is a fresh P-256 key.
func OtherEC(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
