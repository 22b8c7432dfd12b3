package secrets

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/vault/api"
)

// Transit signs with a key of Vault's transit engine that never leaves
// Vault: keybroker asks transit/sign/<key> for a signature and reads only
// the public keys (transit/keys/<key>). It never calls transit/export or
// transit/backup. Only Ed25519 keys, not derived, are accepted, so that a
// signature is pure Ed25519 over the bytes given and checks with the public
// key alone.
type Transit struct {
	v          *Vault
	mount, key string

	mu   sync.Mutex
	pubs map[int]ed25519.PublicKey
}

// Transit returns a signer for key under mount (such as transit).
func (v *Vault) Transit(mount, key string) *Transit {
	return &Transit{v: v, mount: strings.Trim(mount, "/"), key: key, pubs: map[int]ed25519.PublicKey{}}
}

// Ref names the key: mount/key.
func (t *Transit) Ref() string { return t.mount + "/" + t.key }

// TransitKey is what transit/keys/<key> says of a key.
type TransitKey struct {
	Type       string
	Derived    bool
	Exportable bool
	Latest     int
	// Public are the public keys of the versions Vault still has, by
	// version (older ones may have been trimmed).
	Public map[int]ed25519.PublicKey
}

// ErrTransitKeyType: the key is not one keybroker signs with.
var ErrTransitKeyType = errors.New("not an Ed25519 transit key")

// Read reads the key's type and public keys. A key that is not Ed25519, or
// is derived, is ErrTransitKeyType.
func (t *Transit) Read(ctx context.Context) (TransitKey, error) {
	ctx, cancel := context.WithTimeout(ctx, t.v.opts.Timeout)
	defer cancel()
	s, err := t.read(ctx)
	if err != nil {
		return TransitKey{}, err
	}
	if s == nil || s.Data == nil {
		return TransitKey{}, fmt.Errorf("vault transit key %s: not found", t.Ref())
	}
	k := TransitKey{Public: map[int]ed25519.PublicKey{}}
	k.Type, _ = s.Data["type"].(string)
	k.Derived, _ = s.Data["derived"].(bool)
	k.Exportable, _ = s.Data["exportable"].(bool)
	k.Latest = intOf(s.Data["latest_version"])
	if k.Type != "ed25519" || k.Derived {
		return k, fmt.Errorf("vault transit key %s (type %s, derived %v): %w", t.Ref(), k.Type, k.Derived, ErrTransitKeyType)
	}
	keys, _ := s.Data["keys"].(map[string]any)
	for ver, raw := range keys {
		n, err := strconv.Atoi(ver)
		m, _ := raw.(map[string]any)
		pub, _ := m["public_key"].(string)
		b, derr := base64.StdEncoding.DecodeString(pub)
		if err != nil || derr != nil || len(b) != ed25519.PublicKeySize {
			continue
		}
		k.Public[n] = ed25519.PublicKey(b)
	}
	if k.Public[k.Latest] == nil {
		return k, fmt.Errorf("vault transit key %s: no public key for its latest version %d", t.Ref(), k.Latest)
	}
	t.mu.Lock()
	for n, p := range k.Public {
		t.pubs[n] = p
	}
	t.mu.Unlock()
	return k, nil
}

// read reads transit/keys/<key>, logging in again once on a 403.
func (t *Transit) read(ctx context.Context) (*api.Secret, error) {
	path := t.mount + "/keys/" + t.key
	s, err := t.v.client.Logical().ReadWithContext(ctx, path)
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && t.v.relogin(ctx) {
		s, err = t.v.client.Logical().ReadWithContext(ctx, path)
	}
	if err != nil {
		return nil, fmt.Errorf("vault transit key %s: %w", t.Ref(), vaultErr(err))
	}
	return s, nil
}

// Key is the key the next signature is made with: the latest version and
// its public key, read from Vault each time (a rotation in Vault is used
// at once).
func (t *Transit) Key(ctx context.Context) (ed25519.PublicKey, string, int, error) {
	k, err := t.Read(ctx)
	if err != nil {
		return nil, "", 0, err
	}
	return k.Public[k.Latest], t.key, k.Latest, nil
}

// Sign asks Vault to sign msg with version of the key: pure Ed25519 (no
// prehashing), the raw 64-byte signature (Vault's vault:vN: prefix cut).
func (t *Transit) Sign(ctx context.Context, version int, msg []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, t.v.opts.Timeout)
	defer cancel()
	path := t.mount + "/sign/" + t.key
	data := map[string]any{"input": base64.StdEncoding.EncodeToString(msg), "key_version": version}
	s, err := t.v.client.Logical().WriteWithContext(ctx, path, data)
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && t.v.relogin(ctx) {
		s, err = t.v.client.Logical().WriteWithContext(ctx, path, data)
	}
	if err != nil {
		return nil, fmt.Errorf("vault transit sign %s: %w", t.Ref(), vaultErr(err))
	}
	raw, _ := s.Data["signature"].(string)
	prefix := "vault:v" + strconv.Itoa(version) + ":"
	if !strings.HasPrefix(raw, prefix) {
		return nil, fmt.Errorf("vault transit sign %s: a signature not of version %d", t.Ref(), version)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(raw, prefix))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("vault transit sign %s: not an Ed25519 signature", t.Ref())
	}
	t.mu.Lock()
	pub := t.pubs[version]
	t.mu.Unlock()
	if pub != nil && !ed25519.Verify(pub, msg, sig) {
		return nil, fmt.Errorf("vault transit sign %s: the signature does not verify with version %d's public key", t.Ref(), version)
	}
	return sig, nil
}

func intOf(v any) int {
	switch n := v.(type) {
	case float64:
		return int(n)
	case int:
		return n
	case interface{ Int64() (int64, error) }:
		i, _ := n.Int64()
		return int(i)
	case string:
		i, _ := strconv.Atoi(n)
		return i
	}
	return 0
}
