package jwtauth_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/jwttest"
)

const sub = "system:serviceaccount:soar:workflows"

// waitKeys waits for the background load of v's keys.
func waitKeys(t *testing.T, v *jwtauth.Verifier) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st := v.Issuers(); len(st) > 0 && st[0].Available {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("keys never loaded: %+v", v.Issuers())
}

// TestVerify_RefusesEachForgery: a Kubernetes-shaped issuer (JWKS file):
// a good token verifies; every broken or forged one is refused with its
// reason.
func TestVerify_RefusesEachForgery(t *testing.T) {
	is := jwttest.New(t, "https://kubernetes.default.svc.cluster.local")
	file := filepath.Join(t.TempDir(), "jwks.json")
	is.WriteJWKS(file)
	v := jwtauth.New([]jwtauth.IssuerConfig{{Issuer: is.URL, Audiences: []string{"keybroker"}, JWKSFile: file}}, jwtauth.Options{}, nil)
	defer v.Close(nil)
	waitKeys(t, v)
	ctx := context.Background()

	good := is.Claims(sub, "keybroker", 10*time.Minute)
	c, err := v.Verify(ctx, is.Sign(good))
	if err != nil || c.Subject != sub || c.Issuer != is.URL {
		t.Fatalf("good token: %+v %v", c, err)
	}
	with := func(k string, val any) map[string]any {
		m := is.Claims(sub, "keybroker", 10*time.Minute)
		if val == nil {
			delete(m, k)
		} else {
			m[k] = val
		}
		return m
	}
	now := time.Now()
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: is.PublicKeyPEM()}, (&jose.SignerOptions{}).WithHeader("kid", is.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	hsObj, _ := hs.Sign([]byte(`{"iss":"` + is.URL + `","sub":"` + sub + `","aud":"keybroker","exp":` + itoa(now.Add(time.Hour).Unix()) + `}`))
	hsTok, _ := hsObj.CompactSerialize()
	for _, tc := range []struct {
		name, tok, reason string
	}{
		{"expired", is.Sign(with("exp", now.Add(-time.Minute).Unix())), "expired"},
		{"expired within the leeway is fine", "", ""},
		{"not yet valid", is.Sign(with("nbf", now.Add(5*time.Minute).Unix())), "not yet valid"},
		{"wrong audience", is.Sign(with("aud", []string{"vault"})), "wrong audience"},
		{"wrong issuer", is.Sign(with("iss", "https://evil.example")), "unknown issuer"},
		{"another key, same kid", jwttest.SignWith(t, jose.RS256, jwttest.OtherRSA(t), is.KeyID, good), "bad signature"},
		{"an EC key, same kid", jwttest.SignWith(t, jose.ES256, jwttest.OtherEC(t), is.KeyID, good), "bad signature"},
		{"alg none", jwttest.Unsigned(is.KeyID, good), `algorithm "none" is not accepted`},
		{"HS256 with the public key as secret", hsTok, `algorithm "HS256" is not accepted`},
		{"no exp (a legacy token)", is.Sign(with("exp", nil)), "no exp"},
		{"lives two days", is.Sign(with("exp", now.Add(48*time.Hour).Unix())), "lives longer than 24h0m0s"},
		{"garbage", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "malformed"},
	} {
		if tc.tok == "" {
			continue
		}
		_, err := v.Verify(ctx, tc.tok)
		var je *jwtauth.Error
		if !errors.As(err, &je) || je.Unavailable || !strings.Contains(je.Reason, tc.reason) {
			t.Errorf("%s: %v, want a refusal saying %q", tc.name, err, tc.reason)
		}
	}
	if _, err := v.Verify(ctx, is.Sign(with("exp", now.Add(-10*time.Second).Unix()))); err != nil {
		t.Errorf("10 s past exp, inside the 30 s leeway: %v", err)
	}
}

func itoa(n int64) string {
	b := []byte{}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// TestVerify_KidFloodRefetchesRarely: tokens with made-up kids make the
// issuer's keys be fetched at most once per 30 s, however many come; a
// rotated key (a new kid the issuer does publish) is found by one refetch.
func TestVerify_KidFloodRefetchesRarely(t *testing.T) {
	is := jwttest.Serve(t)
	v := jwtauth.New([]jwtauth.IssuerConfig{{Issuer: is.URL, Audiences: []string{"keybroker"}}}, jwtauth.Options{}, nil)
	defer v.Close(nil)
	waitKeys(t, v)
	ctx := context.Background()
	before := is.Fetches()
	forger := jwttest.OtherRSA(t)
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := jwttest.SignWith(t, jose.RS256, forger, "made-up-"+itoa(int64(i+1)), is.Claims(sub, "keybroker", time.Minute))
			if _, err := v.Verify(ctx, tok); err == nil {
				t.Error("a forged token verified")
			}
		}()
	}
	wg.Wait()
	flood := is.Fetches() - before
	t.Logf("1000 tokens with made-up kids: %d JWKS fetches", flood)
	if flood != 1 {
		t.Errorf("%d JWKS fetches for the flood, want 1 (at most 1 per 30 s)", flood)
	}
	// Past the 30 s a rotated key is found by one refetch: the next
	// unknown kid after the flood must wait; simulate the wait's end by a
	// fresh verifier over the same issuer.
	is.Rotate("key-2")
	w := jwtauth.New([]jwtauth.IssuerConfig{{Issuer: is.URL, Audiences: []string{"keybroker"}}}, jwtauth.Options{}, nil)
	defer w.Close(nil)
	waitKeys(t, w)
	is.Rotate("key-3")
	if _, err := w.Verify(ctx, is.Sign(is.Claims(sub, "keybroker", time.Minute))); err != nil {
		t.Errorf("a token of a key rotated in after the keys were loaded: %v", err)
	}
}

// TestVerify_IssuerDownAtStart: no network at construction; an issuer
// that does not answer makes its tokens 503-worthy (Unavailable), named.
func TestVerify_IssuerDownAtStart(t *testing.T) {
	v := jwtauth.New([]jwtauth.IssuerConfig{{Issuer: "http://127.0.0.1:1", Audiences: []string{"keybroker"}}}, jwtauth.Options{}, nil)
	defer v.Close(nil)
	is := jwttest.New(t, "http://127.0.0.1:1")
	_, err := v.Verify(context.Background(), is.Sign(is.Claims(sub, "keybroker", time.Minute)))
	var je *jwtauth.Error
	if !errors.As(err, &je) || !je.Unavailable || !strings.Contains(je.Reason, "http://127.0.0.1:1") {
		t.Fatalf("issuer down: %v, want unavailable naming it", err)
	}
}

// BenchmarkVerify is a JWT caller's per-call cost: a cached verified
// token (the usual case), and a first sight (RS256 verification).
func BenchmarkVerify(b *testing.B) {
	is := jwttest.New(b, "https://issuer.example")
	file := filepath.Join(b.TempDir(), "jwks.json")
	is.WriteJWKS(file)
	cfgs := []jwtauth.IssuerConfig{{Issuer: is.URL, Audiences: []string{"keybroker"}, JWKSFile: file}}
	v := jwtauth.New(cfgs, jwtauth.Options{}, nil)
	defer v.Close(nil)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st := v.Issuers(); len(st) > 0 && st[0].Available {
			break
		}
	}
	tok := is.Sign(is.Claims(sub, "keybroker", time.Hour))
	ctx := context.Background()
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first sight", func(b *testing.B) {
		toks := []string{tok}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			// A new verifier (sharing v's keys) has an empty cache: each
			// token is a first sight.
			w := jwtauth.New(cfgs, jwtauth.Options{}, v)
			if _, err := w.Verify(ctx, toks[i%len(toks)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
