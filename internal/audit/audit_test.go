package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeN(t *testing.T, w *Writer, n int) {
	t.Helper()
	for i := range n {
		rec := &Record{Type: TypeCall, Time: Time(time.Unix(int64(i), 0)), RequestID: "r", Status: 200}
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWriter_ChainsAndVerifies(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	writeN(t, w, 5)
	if err := w.WriteEvent(Event{Name: "credential_rotated", Version: 2, OldVersion: 1}, time.Now()); err != nil {
		t.Fatal(err)
	}
	n, err := Verify(bytes.NewReader(buf.Bytes()))
	if err != nil || n != 6 {
		t.Fatalf("verify: %d %v", n, err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var ev map[string]any
	_ = json.Unmarshal([]byte(lines[5]), &ev)
	if ev["type"] != "event" || ev["seq"] != float64(6) || ev["event"].(map[string]any)["name"] != "credential_rotated" {
		t.Errorf("event line %s", lines[5])
	}
	if _, has := ev["status"]; has {
		t.Errorf("event line carries call fields: %s", lines[5])
	}
}

func TestVerify_CatchesTampering(t *testing.T) {
	var buf bytes.Buffer
	writeN(t, NewWriter(&buf), 6)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	join := func(ls []string) string { return strings.Join(ls, "\n") + "\n" }
	edited := append([]string(nil), lines...)
	edited[2] = strings.Replace(edited[2], `"status":200`, `"status":201`, 1)
	deleted := append(append([]string(nil), lines[:3]...), lines[4:]...)
	reordered := append([]string(nil), lines...)
	reordered[2], reordered[3] = reordered[3], reordered[2]
	cases := []struct {
		name     string
		doc      string
		wantLine int
	}{
		{"edited field", join(edited), 4},
		{"deleted line", join(deleted), 4},
		{"reordered lines", join(reordered), 3},
		{"garbage line", join(append(append([]string(nil), lines[:2]...), "not json")), 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(strings.NewReader(tc.doc))
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Line != tc.wantLine {
				t.Errorf("got %v, want a break at line %d", err, tc.wantLine)
			}
		})
	}
}

func TestOpen_ContinuesTheChainAcrossRestartsAndRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, w, 3)
	w.Close()
	w, err = Open(path) // a restart
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, w, 2)
	if n, err := verifyFile(path); err != nil || n != 5 {
		t.Fatalf("after restart: %d %v", n, err)
	}
	// logrotate: move the file away, SIGHUP reopens a new one; the new
	// file's first record links to the old file's last.
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	writeN(t, w, 1)
	w.Close()
	old, _ := os.ReadFile(rotated)
	cur, _ := os.ReadFile(path)
	if n, err := Verify(bytes.NewReader(append(old, cur...))); err != nil || n != 6 {
		t.Errorf("rotated files together: %d %v", n, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v, want 0600", fi.Mode().Perm())
	}
}

func verifyFile(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return Verify(f)
}

type failingWriter struct{ fail bool }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.fail {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriter_FailureIsStickyUntilAWriteSucceeds(t *testing.T) {
	fw := &failingWriter{}
	w := NewWriter(fw)
	if w.Check() != nil {
		t.Fatal("new writer unhealthy")
	}
	fw.fail = true
	if err := w.Write(&Record{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("write: %v", err)
	}
	if err := w.Check(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("check after a failed write: %v", err)
	}
	// Still failing: the probe's own record fails too, so it stays down.
	w.lastProbe = time.Time{}
	if err := w.Check(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("check while still failing: %v", err)
	}
	fw.fail = false
	w.lastProbe = time.Time{}
	if err := w.Check(); err != nil {
		t.Errorf("recovery: %v", err)
	}
	// The first check after the failed write does not probe: the next
	// probe is a second after a failure.
	if written, errs := w.Stats(); written != 1 || errs != 2 {
		t.Errorf("stats %d %d: want the audit_recovered record; the write and one probe failed", written, errs)
	}
}

func TestRedactQuery(t *testing.T) {
	const key = "kbk_PLANTED_presented_key"
	cases := []struct{ in, want string }{
		{"", ""},
		{"limit=10&page=2", "limit=10&page=2"},
		{"access_token=t0k&filter=%7B%7D", "access_token=REDACTED&filter=%7B%7D"},
		{"Token=x&SIGNATURE=y&key=z&secret=s&password=p", "Token=REDACTED&SIGNATURE=REDACTED&key=REDACTED&secret=REDACTED&password=REDACTED"},
		{"apikey=1&custom=2", "apikey=REDACTED&custom=REDACTED"},
		// Names that contain a credential word, in any case.
		{"refresh_token=a&id_token=b&client_secret=c&x-api-key=d&api-key=e&Session_ID=f&X-Amz-Credential=g&oauth_verifier=h&Sig=i",
			"refresh_token=REDACTED&id_token=REDACTED&client_secret=REDACTED&x-api-key=REDACTED&api-key=REDACTED&Session_ID=REDACTED&X-Amz-Credential=REDACTED&oauth_verifier=REDACTED&Sig=REDACTED"},
		// infocyteapiquery appends ?access_token= to a query that has one.
		{"filter={}?access_token=" + key, "filter=%7B%7D%3Faccess_token%3DREDACTED"},
		{"q=a%26token%3D" + key + "%3Bx%3D1", "q=a%26token%3DREDACTED%3Bx%3D1"},
		// A presented key is never written, in any parameter or name.
		{"note=" + key + "&" + key + "=1", "note=REDACTED&REDACTED=REDACTED"},
		// Escaped, the key is still found; spelled with %XX it is still a key.
		{"note=%6Bbk_PLANTED_presented_key", "note=REDACTED"},
		{"%61ccess_token=t0k&b=2", "%61ccess_token=REDACTED&b=2"},
		// What was forwarded is what is recorded: bad escapes, empty pairs,
		// order and spelling kept byte for byte.
		{"organization_id=4242&x=%zz", "organization_id=4242&x=%zz"},
		{"%&a=1&&b&c=%E2%82", "%&a=1&&b&c=%E2%82"},
		{"z=1&a=2&z=3", "z=1&a=2&z=3"},
	}
	for _, tc := range cases {
		got := RedactQuery(tc.in, []string{"custom"}, []string{key})
		if got != tc.want {
			t.Errorf("RedactQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, key) {
			t.Errorf("RedactQuery(%q) wrote the presented key", tc.in)
		}
	}
}

// TestWriter_BeginIsAChainedLineWithoutResults: a begin line sits in the
// chain like any line, carries the call's identity, request, credential
// and policy, bounded and redacted as the record is, and no result field.
func TestWriter_BeginIsAChainedLineWithoutResults(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	writeN(t, w, 2)
	rec := &Record{Type: TypeCall, Time: Time(time.Unix(10, 0)), RequestID: "req-1", Caller: "soar", CallerAuth: "key",
		RemoteAddr: "127.0.0.1:5000", Method: "POST", Upstream: "huntress", Path: "/v1/agents/7/isolation" + strings.Repeat("x", 2000),
		Query: "a=1", Policy: PolicyAllowed, Credential: &CredentialRef{Source: "vault", Ref: "secret/h", Version: 7}}
	seq, err := w.Begin(rec)
	if err != nil || seq != 3 {
		t.Fatalf("Begin = %d, %v; want seq 3", seq, err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(bytes.NewReader(buf.Bytes())); err != nil || n != 4 {
		t.Fatalf("verify: %d %v", n, err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[2]), &got); err != nil {
		t.Fatal(err)
	}
	want := []string{"seq", "prev", "type", "time", "request_id", "caller", "caller_auth", "remote_addr", "method", "upstream", "path", "query", "credential", "policy"}
	if len(got) != len(want) {
		t.Errorf("begin line has %d fields; want exactly %v: %s", len(got), want, lines[2])
	}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("begin line lacks %q: %s", k, lines[2])
		}
	}
	path := got["path"].(string)
	if got["type"] != TypeBegin || got["time"] != "1970-01-01T00:00:10.000Z" || len(path) > MaxPath+64 || !strings.Contains(path, "truncated from 2022 bytes") {
		t.Errorf("begin line %s: want type begin, the call's time, the path bounded", lines[2])
	}
	if !strings.HasPrefix(lines[2], `{"seq":3,"prev":"`) {
		t.Errorf("begin line does not start with seq and prev: %s", lines[2])
	}
}
