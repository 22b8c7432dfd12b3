package secrets

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestVault_KubernetesLoginAndNamespace uses an httptest stand-in for Vault
// (the dev server has no Kubernetes auth plugin): keybroker posts its role
// and service-account JWT to auth/<mount>/login, uses the token it gets, and
// sends the configured namespace, not one from the environment.
func TestVault_KubernetesLoginAndNamespace(t *testing.T) {
	var logins atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ns := r.Header.Get("X-Vault-Namespace"); ns != "team-sec" {
			http.Error(w, `{"errors":["wrong namespace"]}`, 400)
			return
		}
		switch r.URL.Path {
		case "/v1/auth/k8s/login":
			var body map[string]string
			_ = json.NewDecoder(r.Body).Decode(&body)
			if body["role"] != "keybroker" || body["jwt"] != "eyJ.sa-token.sig" {
				http.Error(w, `{"errors":["permission denied"]}`, 403)
				return
			}
			logins.Add(1)
			_, _ = w.Write([]byte(`{"auth":{"client_token":"s.k8s-token","lease_duration":3600,"renewable":true}}`))
		case "/v1/secret/data/vendors/infocyte":
			if r.Header.Get("X-Vault-Token") != "s.k8s-token" {
				http.Error(w, `{"errors":["permission denied"]}`, 403)
				return
			}
			_, _ = w.Write([]byte(`{"data":{"data":{"token":"tok"},"metadata":{"version":4}}}`))
		default:
			http.Error(w, `{"errors":[]}`, 404)
		}
	}))
	defer srv.Close()
	jwt := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(jwt, []byte("eyJ.sa-token.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_NAMESPACE", "from-env")
	t.Setenv("VAULT_TOKEN", "s.from-env")

	v, err := NewVault(VaultOptions{Address: srv.URL, Namespace: "team-sec", Method: "kubernetes", Mount: "k8s", Role: "keybroker", JWTFile: jwt})
	if err != nil {
		t.Fatal(err)
	}
	r, err := v.Source("secret", "vendors/infocyte", 2).Read(context.Background())
	if err != nil || r.Version != 4 || r.Fields["token"] != "tok" || logins.Load() != 1 {
		t.Fatalf("read: %v version %d logins %d", err, r.Version, logins.Load())
	}
	if exp, ok := v.TokenExpiry(); !ok || exp.IsZero() {
		t.Errorf("token expiry not known: %v %v", exp, ok)
	}
}
