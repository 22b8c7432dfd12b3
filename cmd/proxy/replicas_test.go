package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
)

// writeReplica writes replica name's trail into dir/name: calls and a
// checkpoint per file, rotated into files files (audit.log.N … audit.log),
// and returns the file names, oldest first.
func writeReplica(t *testing.T, dir, name string, files int, s *audit.Signer) []string {
	t.Helper()
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d, "audit.log")
	w, err := audit.OpenWith(path, audit.Options{Sync: audit.SyncNone, Replica: name})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for f := 0; f < files; f++ {
		for i := 0; i < 20; i++ {
			at = at.Add(time.Second)
			rec := &audit.Record{Type: audit.TypeCall, Time: audit.Time(at), Caller: "soar", CallerAuth: "key", Method: "GET", Upstream: "huntress",
				Path: "/v1/agents", Status: 200, Outcome: audit.OutcomeForwarded}
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.WriteEvent(audit.Event{Name: "credential_rotated", Upstream: "huntress", Version: f + 2, OldVersion: f + 1}, at); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := w.WriteCheckpoint(s, at); err != nil {
			t.Fatal(err)
		}
		if f == files-1 {
			break
		}
		for n := f; n >= 1; n-- {
			_ = os.Rename(fmt.Sprintf("%s.%d", path, n), fmt.Sprintf("%s.%d", path, n+1))
		}
		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		if err := w.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	var out []string
	for n := files - 1; n >= 1; n-- {
		out = append(out, fmt.Sprintf("%s.%d", path, n))
	}
	return append(out, path)
}

// TestReplicas_OneStoryFromSeveralTrails: three replicas' rotated files,
// given in any order, verify as three chains, each named; with one
// replica's middle file removed verify names that replica and the gap and
// fails, and the report still reads the other two and what is left,
// summed, with a table per replica and the events in time order.
func TestReplicas_OneStoryFromSeveralTrails(t *testing.T) {
	seed, pub, err := audit.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := audit.NewSigner(seed)
	dir := t.TempDir()
	var all []string
	byReplica := map[string][]string{}
	for _, r := range []string{"kb-a", "kb-b", "kb-c"} {
		byReplica[r] = writeReplica(t, dir, r, 3, s)
		all = append(all, byReplica[r]...)
	}
	// Any order: newest first, replicas interleaved.
	shuffled := []string{all[8], all[0], all[4], all[2], all[6], all[1], all[7], all[3], all[5]}
	var out bytes.Buffer
	if code := run(append([]string{"audit", "verify", "--public-key", pub}, shuffled...), nil, &out, &out); code != 0 {
		t.Fatalf("verify of three replicas: exit %d\n%s", code, out.String())
	}
	for _, r := range []string{"kb-a", "kb-b", "kb-c"} {
		if !strings.Contains(out.String(), "replica "+r+": 69 record(s), seq 1 to 69, chain intact") {
			t.Errorf("verify does not name replica %s whole:\n%s", r, out.String())
		}
	}

	// kb-b's middle file is lost.
	missing := byReplica["kb-b"][1]
	var left []string
	for _, f := range shuffled {
		if f != missing {
			left = append(left, f)
		}
	}
	out.Reset()
	code := run(append([]string{"audit", "verify", "--public-key", pub}, left...), nil, &out, &out)
	if code != 1 || !strings.Contains(out.String(), "replica kb-b: a hole between "+byReplica["kb-b"][0]) ||
		!strings.Contains(out.String(), "files are missing") || strings.Contains(out.String(), "replica kb-a: FAILED") {
		t.Errorf("verify with kb-b's middle file removed: exit %d\n%s", code, out.String())
	}

	out.Reset()
	var stderr bytes.Buffer
	code = run(append([]string{"audit", "report", "--format", "json"}, left...), nil, &out, &stderr)
	var rep struct {
		Rows []struct {
			Caller string `json:"caller"`
			Calls  int    `json:"calls"`
		} `json:"rows"`
		Replicas []struct {
			Replica string `json:"replica"`
			Files   int    `json:"files"`
			Calls   int    `json:"calls"`
		} `json:"replicas"`
		Events struct {
			Notable []struct {
				Time    time.Time `json:"time"`
				Replica string    `json:"replica"`
			} `json:"notable"`
		} `json:"events"`
		Chain struct {
			Intact bool   `json:"intact"`
			Break  string `json:"break"`
		} `json:"chain"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report: exit %d: %v\n%s", code, err, out.String())
	}
	if code != 1 || rep.Chain.Intact || !strings.Contains(rep.Chain.Break, "kb-b") {
		t.Errorf("report: exit %d, chain %+v; want the hole named and exit 1", code, rep.Chain)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Calls != 60+60+40 {
		t.Errorf("report rows %+v; want the calls of all three, less the lost file's 20", rep.Rows)
	}
	got := map[string][2]int{}
	for _, r := range rep.Replicas {
		got[r.Replica] = [2]int{r.Files, r.Calls}
	}
	if got["kb-a"] != [2]int{3, 60} || got["kb-b"] != [2]int{2, 40} || got["kb-c"] != [2]int{3, 60} {
		t.Errorf("per replica %v", got)
	}
	seen := map[string]bool{}
	for i, e := range rep.Events.Notable {
		seen[e.Replica] = true
		if i > 0 && e.Time.Before(rep.Events.Notable[i-1].Time) {
			t.Errorf("notable events not in time order at %d", i)
		}
	}
	if len(seen) != 3 {
		t.Errorf("notable events name replicas %v; want all three", seen)
	}
	// A directory is read too; a file that is not a trail is skipped.
	mustWrite(t, filepath.Join(dir, "kb-a", "notes.txt"), "not a trail\n")
	out.Reset()
	var errOut bytes.Buffer
	if code := run([]string{"audit", "verify", filepath.Join(dir, "kb-a")}, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "69 record(s)") {
		t.Errorf("verify of a directory: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}
