// Command jwtcaller makes a caller's platform token for bench/ab.sh's JWT
// run (KB_BENCH_CALLER=jwt): a fresh RSA key, its JWKS written to -jwks
// (keybroker's jwks_file), and one RS256 token for -sub and -aud, printed
// on stdout. The key lives only in this process: nothing usable is kept.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func main() {
	jwksPath := flag.String("jwks", "jwks.json", "where to write the JWKS")
	issuer := flag.String("iss", "https://bench.issuer.example", "issuer")
	sub := flag.String("sub", "system:serviceaccount:bench:caller", "subject")
	aud := flag.String("aud", "keybroker", "audience")
	ttl := flag.Duration("ttl", time.Hour, "token lifetime")
	flag.Parse()
	if err := run(*jwksPath, *issuer, *sub, *aud, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "jwtcaller:", err)
		os.Exit(1)
	}
}

func run(jwksPath, issuer, sub, aud string, ttl time.Duration) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "bench-1", Algorithm: "RS256", Use: "sig"}}}
	b, err := json.Marshal(set)
	if err != nil {
		return err
	}
	if err := os.WriteFile(jwksPath, b, 0o644); err != nil {
		return err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "bench-1"))
	if err != nil {
		return err
	}
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{"iss": issuer, "sub": sub, "aud": aud,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix()})
	obj, err := signer.Sign(claims)
	if err != nil {
		return err
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
