// Command standin serves stand-ins for the Huntress, Huntress Managed SAT
// (OAuth2 client credentials) and Infocyte HUNT APIs on loopback, so that keybroker can be tried offline (make run). They are
// internal/vendortest's fakes: each accepts only the credential it was
// started with, checked the way the vendor checks it, and keeps the
// vendor's rate limit (Huntress: 60 calls in any 60 s).
//
// It makes a fresh random credential for each and writes it where
// keybroker's file source reads it (DIR/huntress.json, DIR/infocyte.json,
// DIR/huntress-sat.json, mode 0600), then prints one JSON line on stdout:
//
//	{"huntress_url":"http://127.0.0.1:PORT","infocyte_url":"http://127.0.0.1:PORT/api","sat_url":"http://127.0.0.1:PORT"}
//
// and serves until SIGINT or SIGTERM. Never a real vendor: test data only.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
)

func main() {
	dir := flag.String("dir", ".run/standin", "where to write the stand-ins' credentials for keybroker's file source")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string) error {
	key, secret, token := random(16), random(32), random(32) // token: 64 characters, as Infocyte's
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "huntress.json"), map[string]string{"api_key": key, "api_secret": secret}); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "infocyte.json"), map[string]string{"token": token}); err != nil {
		return err
	}
	satID, satSecret := "standin-"+random(4), random(32)
	if err := writeJSON(filepath.Join(dir, "huntress-sat.json"), map[string]string{"client_id": satID, "client_secret": satSecret}); err != nil {
		return err
	}
	sat := vendortest.NewSAT(satID, satSecret, 5*time.Minute)
	defer sat.Close()
	hunt := vendortest.NewHuntress(key, secret, vendortest.HuntressOptions{})
	defer hunt.Close()
	info := vendortest.NewInfocyte(token)
	defer info.Close()
	ready, err := json.Marshal(map[string]string{"huntress_url": hunt.URL, "infocyte_url": info.BaseURL(), "sat_url": sat.URL})
	if err != nil {
		return err
	}
	fmt.Println(string(ready))
	<-ctx.Done()
	return nil
}

// random returns n random bytes in hex.
func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// writeJSON writes v to path atomically, readable by its owner only.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
