package secrets

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vaulttest"
)

const vaultPlanted = "PLANTED-vault-secret-77e1"

func tokenVault(t *testing.T, addr, token string) *Vault {
	t.Helper()
	v, err := NewVault(VaultOptions{Address: addr, Method: "token", Token: token, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVault_ReadsKV2ValueAndVersion_AndKV1(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Put("vendors/huntress", map[string]any{"api_key": "k", "api_secret": vaultPlanted})
	ver := vs.Put("vendors/huntress", map[string]any{"api_key": "k2", "api_secret": vaultPlanted})
	vs.Write("sys/mounts/kv1", map[string]any{"type": "kv", "options": map[string]any{"version": "1"}})
	vs.Write("kv1/vendors/infocyte", map[string]any{"token": "tok"})

	v := tokenVault(t, vs.Addr, vs.RootToken)
	r, err := v.Source("secret", "vendors/huntress", 2).Read(context.Background())
	if err != nil || r.Version != ver || ver != 2 || r.Fields["api_key"] != "k2" || r.Fields["api_secret"] != vaultPlanted {
		t.Fatalf("kv2: %v version %d (want %d) fields %v", err, r.Version, ver, r.Fields)
	}
	r, err = v.Source("kv1", "vendors/infocyte", 1).Read(context.Background())
	if err != nil || r.Version != 0 || r.Fields["token"] != "tok" {
		t.Fatalf("kv1: %v %+v", err, r)
	}
}

func TestVault_BadInputsGiveClearErrors(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Put("vendors/huntress", map[string]any{"api_key": "k", "api_secret": vaultPlanted})
	vs.Write("sys/policies/acl/huntress-only", map[string]any{"policy": `path "secret/data/vendors/huntress" { capabilities = ["read"] }`})
	limited := vs.Token("1h", "huntress-only")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()

	cases := []struct {
		name, addr, token, mount, path string
		required                       []string
		want                           string
	}{
		{"wrong mount", vs.Addr, vs.RootToken, "nosuch", "vendors/huntress", nil, "vault nosuch/vendors/huntress: no secret at this mount and path"},
		{"missing path", vs.Addr, vs.RootToken, "secret", "vendors/none", nil, "no secret at this mount and path"},
		{"missing field", vs.Addr, vs.RootToken, "secret", "vendors/huntress", []string{"api_key", "token"}, `field "token" missing`},
		{"permission denied", vs.Addr, limited, "secret", "vendors/infocyte", nil, "permission denied"},
		{"unreachable", dead, vs.RootToken, "secret", "vendors/huntress", nil, "connection refused"},
		{"bad token", vs.Addr, "hvs.not-a-token", "secret", "vendors/huntress", nil, "vault token lookup"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := tokenVault(t, tc.addr, tc.token)
			c, _ := NewCache([]Spec{{Name: "u", Source: v.Source(tc.mount, tc.path, 2), Required: tc.required}}, Options{})
			_, err := c.Get(context.Background(), "u")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), vaultPlanted) || strings.Contains(err.Error(), tc.token) {
				t.Errorf("error leaks a secret or the token: %v", err)
			}
		})
	}
}

// TestVault_AppRoleRenewsAndLogsInAgain: a token TTL of 2 s and max TTL of
// 5 s; over 9 s the token must be renewed, then replaced by a new login,
// with every read succeeding.
func TestVault_AppRoleRenewsAndLogsInAgain(t *testing.T) {
	vs := vaulttest.Start(t)
	if vs.External {
		t.Skip("needs AppRole setup rights on the test Vault")
	}
	vs.Put("vendors/huntress", map[string]any{"api_key": "k", "api_secret": vaultPlanted})
	vs.Write("sys/auth/approle", map[string]any{"type": "approle"})
	vs.Write("sys/policies/acl/keybroker", map[string]any{"policy": `path "secret/data/vendors/*" { capabilities = ["read"] }`})
	vs.Write("auth/approle/role/keybroker", map[string]any{"token_policies": "keybroker", "token_ttl": "2s", "token_max_ttl": "5s"})
	roleID, _ := vs.Client.Logical().Read("auth/approle/role/keybroker/role-id")
	sid := vs.Write("auth/approle/role/keybroker/secret-id", nil)
	sidFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(sidFile, []byte(sid.Data["secret_id"].(string)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	count := map[string]int{}
	v, err := NewVault(VaultOptions{Address: vs.Addr, Method: "approle", Mount: "approle",
		RoleID: roleID.Data["role_id"].(string), SecretIDFile: sidFile,
		OnEvent: func(e Event) { mu.Lock(); count[e.Type]++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = v.Run(ctx); close(done) }()
	src := v.Source("secret", "vendors/huntress", 2)
	failures := 0
	for end := time.Now().Add(9 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, err := src.Read(ctx); err != nil {
			failures++
			t.Logf("read: %v", err)
		}
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if failures > 0 || count["vault_login"] < 2 || count["vault_renewed"] < 1 || count["vault_login_failed"] > 0 {
		t.Errorf("failures %d, events %v: want no failure, a renewal and a fresh login", failures, count)
	}
}
