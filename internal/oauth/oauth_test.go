package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keybroker/keybroker/internal/secrets"
)

// rotatingKey is a signing key source whose key the test changes, and
// which counts rereads.
type rotatingKey struct {
	mu      sync.Mutex
	secret  string
	version int
	rereads int
	// lag: Get keeps answering the old key until a reread (another
	// replica's cache has not refreshed yet).
	lag    bool
	served string
}

func (k *rotatingKey) get(_ context.Context, reread bool) (SigningKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if reread {
		k.rereads++
	}
	if !k.lag || reread || k.served == "" {
		k.served = k.secret
	}
	return SigningKey{Secret: []byte(k.served), Version: k.version}, nil
}

func (k *rotatingKey) set(s string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.secret, k.version = s, k.version+1
}

// TestIssuer_RotationKeepsThePreviousKeyForOneLifetime: a token signed
// before a rotation verifies until one token lifetime (and the grace)
// after the rotation was seen, then no longer.
func TestIssuer_RotationKeepsThePreviousKeyForOneLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		k := &rotatingKey{secret: strings.Repeat("a", 32)}
		is := NewIssuer(k.get, time.Hour, nil)
		claims := Claims{Caller: "soar", Upstream: "sat", Fingerprint: "f"}
		old, _, err := is.Issue(ctx, claims)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Minute)
		k.set(strings.Repeat("b", 32))
		fresh, _, _ := is.Issue(ctx, claims)
		if strings.Split(fresh, ".")[1] == strings.Split(old, ".")[1] {
			t.Fatal("the new token carries the old key id")
		}
		for _, tok := range []string{old, fresh} {
			if _, err := is.Verify(ctx, tok); err != nil {
				t.Errorf("right after the rotation: %v", err)
			}
		}
		// The old token itself expires 10 minutes later, +30 s grace.
		time.Sleep(10*time.Minute + 20*time.Second)
		if _, err := is.Verify(ctx, old); err != nil {
			t.Errorf("inside the grace: %v", err)
		}
		time.Sleep(20 * time.Second)
		if _, err := is.Verify(ctx, old); !errors.Is(err, ErrExpired) {
			t.Errorf("past the grace: %v, want expired", err)
		}
		// A token made with the old key after the rotation (a forger who
		// holds the old key) fails once the old key's time is over.
		forged := signWith(strings.Repeat("a", 32), Claims{Caller: "soar", Upstream: "sat", Fingerprint: "f", Expires: time.Now().Add(10 * time.Hour).Unix()})
		if _, err := is.Verify(ctx, forged); err != nil {
			t.Errorf("the old key is still kept here (1h after the rotation was seen not yet over): %v", err)
		}
		time.Sleep(time.Hour)
		if _, err := is.Verify(ctx, forged); !errors.Is(err, ErrBadMAC) {
			t.Errorf("old key after its lifetime: %v, want a signature failure", err)
		}
	})
}

func signWith(secret string, c Claims) string {
	is := NewIssuer(func(context.Context, bool) (SigningKey, error) { return SigningKey{Secret: []byte(secret)}, nil }, time.Hour, nil)
	tok, _, _ := is.Issue(context.Background(), Claims{Caller: c.Caller, Upstream: c.Upstream, Fingerprint: c.Fingerprint})
	// Re-sign with the wanted expiry.
	parts := strings.Split(tok, ".")
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"c":"` + c.Caller + `","u":"` + c.Upstream + `","f":"` + c.Fingerprint + `","e":` + strconv.FormatInt(c.Expires, 10) + `}`))
	head := TokenPrefix + parts[1] + "." + payload
	return head + "." + base64.RawURLEncoding.EncodeToString(mac([]byte(secret), head))
}

// TestIssuer_UnknownKeyIDRereads: a token from a replica that already
// uses the rotated key makes this one ask its source again; made-up key
// ids ask again too, which the credential cache bounds.
func TestIssuer_UnknownKeyIDRereads(t *testing.T) {
	ctx := context.Background()
	k := &rotatingKey{secret: strings.Repeat("a", 32), lag: true}
	other := &rotatingKey{secret: strings.Repeat("b", 32)}
	here := NewIssuer(k.get, time.Hour, nil)
	if _, _, err := here.Issue(ctx, Claims{Caller: "x", Upstream: "u"}); err != nil {
		t.Fatal(err)
	}
	k.set(strings.Repeat("b", 32)) // rotated; this replica has not read it
	tok, _, _ := NewIssuer(other.get, time.Hour, nil).Issue(ctx, Claims{Caller: "x", Upstream: "u", Fingerprint: "f"})
	if _, err := here.Verify(ctx, tok); err != nil {
		t.Fatalf("a token of the rotated key: %v", err)
	}
	if k.rereads != 1 {
		t.Errorf("%d rereads, want 1", k.rereads)
	}
	if _, err := here.Verify(ctx, "kbt.000000000000.e30.AAAA"); !errors.Is(err, ErrBadMAC) {
		t.Errorf("unknown key id: %v", err)
	}
}

// TestIssuer_ShortKeyRefused: a signing key under 32 bytes signs nothing.
func TestIssuer_ShortKeyRefused(t *testing.T) {
	is := NewIssuer(func(context.Context, bool) (SigningKey, error) { return SigningKey{Secret: []byte("short")}, nil }, time.Hour, nil)
	if _, _, err := is.Issue(context.Background(), Claims{Caller: "x", Upstream: "u"}); !errors.Is(err, ErrNoKey) {
		t.Errorf("short key: %v", err)
	}
}

// TestReadRequest_BasicIsFormEncoded: RFC 6749 §2.3.1 form-encodes the
// client id and secret before base64; a secret with ':' or '%' survives.
func TestReadRequest_BasicIsFormEncoded(t *testing.T) {
	secret := "kbk_a:b%c+d"
	r := httptest.NewRequest("POST", "/t", strings.NewReader("grant_type=client_credentials"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	r.Header.Set("Authorization", "basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape("soar")+":"+url.QueryEscape(secret))))
	req, err := ReadRequest(r)
	if err != nil || req.ClientID != "soar" || req.ClientSecret != secret || !req.Basic {
		t.Fatalf("%+v %v", req, err)
	}
	r = httptest.NewRequest("POST", "/t", strings.NewReader(strings.Repeat("a", MaxTokenRequestBytes+1)))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if _, err := ReadRequest(r); err == nil || err.Code != ErrInvalidRequest {
		t.Errorf("oversized body: %v", err)
	}
}

// BenchmarkIssuer_Verify is the per-call cost of identifying a caller by a
// keybroker token (HMAC-SHA256 and the claims' JSON).
func BenchmarkIssuer_Verify(b *testing.B) {
	ctx := context.Background()
	is := NewIssuer(nil, time.Hour, nil)
	tok, _, _ := is.Issue(ctx, Claims{Caller: "soar-workflows", Upstream: "huntress-sat", Fingerprint: Fingerprint(make([]byte, 32))})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := is.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVendorTokens_Warm is the per-call cost of adding a warm vendor
// token to a call's credential.
func BenchmarkVendorTokens_Warm(b *testing.B) {
	v := NewVendorTokens(VendorConfig{Upstream: "sat"})
	cred := secrets.Credential{Version: 3, Source: "vault", Ref: "secret/vendors/sat"}
	v.cur.Store(&token{cred: cred, value: "t", fetched: time.Now(), expires: time.Now().Add(time.Hour)})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Token(ctx, cred); err != nil {
			b.Fatal(err)
		}
	}
}

// TestIssuer_NoTwoTokensAlike: two tokens for the same caller, upstream
// and key in the same second differ (the random id "j"), and both verify;
// a token without an id (issued before ids) still verifies.
func TestIssuer_NoTwoTokensAlike(t *testing.T) {
	secret := strings.Repeat("k", MinKeyBytes)
	key := func(context.Context, bool) (SigningKey, error) { return SigningKey{Secret: []byte(secret)}, nil }
	now := time.Unix(1_800_000_000, 0)
	is := NewIssuer(key, time.Hour, func() time.Time { return now })
	c := Claims{Caller: "soar", Upstream: "huntress-sat", Fingerprint: "f"}
	a, _, err := is.Issue(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := is.Issue(context.Background(), c)
	if a == b {
		t.Fatal("two tokens issued in the same second are byte-identical")
	}
	ca, err1 := is.Verify(context.Background(), a)
	cb, err2 := is.Verify(context.Background(), b)
	if err1 != nil || err2 != nil || ca.ID == cb.ID || len(ca.ID) != 16 {
		t.Fatalf("verify: %v %v; ids %q %q; want two 16-character ids (96 bits)", err1, err2, ca.ID, cb.ID)
	}
	// A token from before ids: same signature scheme, no "j".
	kid := a[len(TokenPrefix) : strings.Index(a[len(TokenPrefix):], ".")+len(TokenPrefix)]
	payload, _ := json.Marshal(map[string]any{"c": "soar", "u": "huntress-sat", "f": "f", "e": now.Add(time.Hour).Unix()})
	head := TokenPrefix + kid + "." + base64.RawURLEncoding.EncodeToString(payload)
	old := head + "." + base64.RawURLEncoding.EncodeToString(mac([]byte(secret), head))
	if cl, err := is.Verify(context.Background(), old); err != nil || cl.ID != "" {
		t.Fatalf("a token without an id: %+v, %v; want it valid", cl, err)
	}
}
