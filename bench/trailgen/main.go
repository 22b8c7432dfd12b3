// Command trailgen writes a signed audit trail of a given size for
// bench/verify.sh: calls with their begin lines, lifecycle events and a
// signed checkpoint every -every records, through keybroker's own writer,
// rotated into -files files (the older ones optionally gzipped, as
// logrotate leaves them). It prints the public key on stdout. The signing
// key lives only in this process.
package main

import (
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
)

func main() {
	dir := flag.String("dir", "trail", "where to write audit.log and its rotated files")
	size := flag.Int64("size", 1<<30, "bytes of trail to write, all files together")
	files := flag.Int("files", 4, "how many files: the current one and files-1 rotated ones")
	gz := flag.Bool("gzip", false, "gzip the rotated files but the newest (audit.log.1)")
	every := flag.Int("every", 10000, "a signed checkpoint every this many records")
	flag.Parse()
	if err := run(*dir, *size, *files, *gz, *every); err != nil {
		fmt.Fprintln(os.Stderr, "trailgen:", err)
		os.Exit(1)
	}
}

func run(dir string, size int64, files int, gz bool, every int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(dir, "audit.log")
	for _, f := range []string{path} {
		_ = os.Remove(f)
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	signer, err := audit.NewSigner(base64.StdEncoding.EncodeToString(seed))
	if err != nil {
		return err
	}
	w, err := audit.OpenWith(path, audit.Options{Sync: audit.SyncNone})
	if err != nil {
		return err
	}
	defer w.Close()
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	paths := []string{"/v1/agents", "/v1/agents/17/isolation", "/v1/incident_reports/3", "/v1/organizations?limit=50&page_token=abc"}
	per := size / int64(files)
	var written int64
	for f := 0; f < files; f++ {
		for written < per*int64(f+1) {
			for i := 0; i < every; i++ {
				at = at.Add(37 * time.Millisecond)
				rec := &audit.Record{Type: audit.TypeCall, Time: audit.Time(at), RequestID: fmt.Sprintf("%016x%016x", written, i),
					Caller: []string{"soar-workflows", "siem-collector"}[i%2], CallerAuth: "key", RemoteAddr: "10.1.2.3:51234",
					Method: []string{"GET", "POST"}[i%2], Upstream: "huntress", Path: paths[i%len(paths)], Operation: "list_agents", Tier: "read",
					Policy: audit.PolicyAllowed, Credential: &audit.CredentialRef{Source: "vault", Ref: "secret/vendors/huntress", Version: 7}}
				seq, err := w.Begin(rec)
				if err != nil {
					return err
				}
				rec.BeginSeq, rec.Status, rec.Outcome, rec.BytesOut, rec.DurationMS, rec.UpstreamMS = seq, 200, audit.OutcomeForwarded, 5120, 84.2, 80.1
				if err := w.Write(rec); err != nil {
					return err
				}
				if i%5000 == 0 {
					if err := w.WriteEvent(audit.Event{Name: "credential_loaded", Upstream: "huntress", Source: "vault", Version: 7}, at); err != nil {
						return err
					}
				}
			}
			if _, _, _, err := w.WriteCheckpoint(signer, at); err != nil {
				return err
			}
			st, err := os.Stat(path)
			if err != nil {
				return err
			}
			written = per*int64(f) + st.Size()
		}
		if f == files-1 {
			break
		}
		// Rotate as logrotate does: audit.log.N … audit.log.1, then reopen.
		for n := f; n >= 1; n-- {
			_ = os.Rename(fmt.Sprintf("%s.%d", path, n), fmt.Sprintf("%s.%d", path, n+1))
		}
		if err := os.Rename(path, path+".1"); err != nil {
			return err
		}
		if err := w.Reopen(); err != nil {
			return err
		}
	}
	if gz {
		for n := 2; n < files; n++ {
			if err := gzipFile(fmt.Sprintf("%s.%d", path, n)); err != nil {
				return err
			}
		}
	}
	fmt.Println(base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)))
	return nil
}

func gzipFile(p string) error {
	in, err := os.Open(p)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(p + ".gz")
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Remove(p)
}
