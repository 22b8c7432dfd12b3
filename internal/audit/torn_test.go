package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shortWriter writes the first half of each write to the file, then fails
// as a full disk does.
type shortWriter struct{ f *os.File }

func (s shortWriter) Write(p []byte) (int, error) {
	n, _ := s.f.Write(p[:len(p)/2])
	return n, syscall.ENOSPC
}

func writeCalls(t *testing.T, w *Writer, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := w.Write(&Record{Type: TypeCall, Time: Time(time.Now()), Method: "GET", Path: "/v1/agents"}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriter_FailedWriteLeavesNoTornLine: a short write is cut back off
// the file, so the chain still ends in a whole record and verifies, and
// the next good write continues it.
func TestWriter_FailedWriteLeavesNoTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writeCalls(t, w, 3)
	w.out = shortWriter{w.file}
	if err := w.Write(&Record{Type: TypeCall, Method: "GET"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("short write: %v", err)
	}
	raw, _ := os.ReadFile(path)
	if !bytes.HasSuffix(raw, []byte("\n")) || bytes.Count(raw, []byte("\n")) != 3 {
		t.Fatalf("after a failed write the file ends in %q", raw[max(0, len(raw)-40):])
	}
	w.out = w.file
	w.lastProbe = time.Time{}
	if err := w.Check(); err != nil {
		t.Fatalf("recovery: %v", err)
	}
	writeCalls(t, w, 1)
	f, _ := os.Open(path)
	defer f.Close()
	if n, err := Verify(f); err != nil || n != 5 { // 3, audit_recovered, 1
		t.Errorf("verify: %d records, %v", n, err)
	}
}

// TestOpen_CutsATornTailAndRecordsIt: a file that ends in a torn line (a
// crash mid-write) opens; the torn bytes are cut off and an audit_torn_tail
// event says where and how many; the chain verifies. Verify, before that,
// names the torn line as such.
func TestOpen_CutsATornTailAndRecordsIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	writeCalls(t, w, 2)
	w.Close()
	good, _ := os.ReadFile(path)
	torn := `{"seq":3,"prev":"ab12","type":"call","ti`
	if err := os.WriteFile(path, append(append([]byte{}, good...), torn...), 0o600); err != nil {
		t.Fatal(err)
	}

	f, _ := os.Open(path)
	n, err := Verify(f)
	f.Close()
	var ve *VerifyError
	if !errors.As(err, &ve) || !ve.Torn || ve.Line != 3 || n != 2 || !strings.Contains(ve.Reason, "torn final line") {
		t.Fatalf("verify of a torn file: %d, %v", n, err)
	}

	w, err = Open(path)
	if err != nil {
		t.Fatalf("open refused a torn file: %v", err)
	}
	writeCalls(t, w, 1)
	w.Close()
	raw, _ := os.ReadFile(path)
	if !bytes.HasPrefix(raw, good) || bytes.Contains(raw, []byte(torn)) {
		t.Fatalf("torn bytes kept or good records changed:\n%s", raw)
	}
	want := `"name":"audit_torn_tail","detail":"cut off a torn trailing line (a write cut short by a full disk or a crash): 40 bytes at offset ` +
		strconv.Itoa(len(good)) + `"`
	if !strings.Contains(string(raw), want) {
		t.Errorf("no audit_torn_tail event with offset and size in:\n%s", raw)
	}
	f, _ = os.Open(path)
	defer f.Close()
	if n, err := Verify(f); err != nil || n != 4 {
		t.Errorf("verify after repair: %d, %v", n, err)
	}
}

// TestOpen_StillRefusesAGarbageLastLine: a complete last line that is not
// a record is tampering, not a torn write: keybroker does not cut it.
func TestOpen_StillRefusesAGarbageLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte("not a record\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "not an audit record") {
		t.Errorf("open: %v", err)
	}
}

// TestVerify_ReadsEveryLineTheWriterCanWrite: a record at every bound,
// each byte escaped, is read back.
func TestVerify_ReadsEveryLineTheWriterCanWrite(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	ctl := strings.Repeat("\x01", 1<<20)
	rec := &Record{Type: TypeCall, RequestID: ctl, Caller: ctl, CallerAuth: ctl, RemoteAddr: ctl, Method: ctl,
		Upstream: ctl, Path: ctl, Query: ctl, Outcome: ctl, Policy: ctl, RateLimitedBy: ctl, Error: ctl,
		Credential: &CredentialRef{Source: ctl, Ref: ctl}}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteEvent(Event{Name: ctl, Upstream: ctl, Source: ctl, Ref: ctl, Detail: ctl, RemoteAddr: ctl}, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if len(l) > MaxLine {
			t.Errorf("a line of %d bytes, over MaxLine %d", len(l), MaxLine)
		}
	}
	if n, err := Verify(&buf); err != nil || n != 2 {
		t.Errorf("verify: %d, %v", n, err)
	}
}

// TestCheckpoint_ChainsAcrossARestart: the first checkpoint after a
// reopen chains to the last checkpoint in the file.
func TestCheckpoint_ChainsAcrossARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	seed, _, _ := NewSigningKey()
	s, _ := NewSigner(seed)
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	writeCalls(t, w, 3)
	first, _, ok, err := w.WriteCheckpoint(s, time.Now())
	if !ok || err != nil {
		t.Fatalf("first checkpoint: %v %v", ok, err)
	}
	writeCalls(t, w, 2)
	w.Close()

	w, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writeCalls(t, w, 1)
	second, _, ok, err := w.WriteCheckpoint(s, time.Now())
	if !ok || err != nil || second.PrevSignature != first.Signature || second.Seq != 7 {
		t.Fatalf("after a restart: %+v (ok %v, %v); want it to chain to %s", second, ok, err, first.Signature[:8])
	}
	if _, _, ok, _ := w.WriteCheckpoint(s, time.Now()); ok {
		t.Error("a checkpoint with no new record")
	}
}
