package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/vendortest"
)

func keygen(t *testing.T) (priv, pub string) {
	t.Helper()
	var out bytes.Buffer
	if code := run([]string{"audit", "keygen"}, nil, &out, &out); code != 0 {
		t.Fatalf("keygen: %s", out.String())
	}
	m := regexp.MustCompile(`^private_key: (\S+)\npublic_key: (\S+)\n$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("keygen printed %q", out.String())
	}
	return m[1], m[2]
}

// verify runs proxy audit verify and returns its exit code and output.
func verify(args ...string) (int, string) {
	var out bytes.Buffer
	code := run(append([]string{"audit", "verify"}, args...), nil, &out, &out)
	return code, out.String()
}

// TestAudit_SignedCheckpointsThroughTheBinary runs keybroker with signed
// checkpoints, rotates the signing key mid-trail, and checks what an
// auditor can and cannot be fooled by: an intact trail verifies (with both
// keys); a wrong key fails; a record edited with the whole chain
// recomputed fails; a tail cut after an earlier checkpoint fails against
// the auditor's later checkpoint copied from the operational log; a torn
// last line is named; rotated files, one gzipped, verify in order.
func TestAudit_SignedCheckpointsThroughTheBinary(t *testing.T) {
	priv1, pub1 := keygen(t)
	priv2, pub2 := keygen(t)
	hunt := vendortest.NewHuntress("hk_a", "hs_PLANTED_audit", vendortest.HuntressOptions{Limit: 1 << 20})
	defer hunt.Close()
	s := newBinSetup(t)
	mustWrite(t, filepath.Join(s.dir, "h.json"), `{"api_key":"hk_a","api_secret":"hs_PLANTED_audit"}`)
	signing := filepath.Join(s.dir, "signing.json")
	writeKey := func(k string) {
		mustWrite(t, signing+".tmp", fmt.Sprintf(`{"private_key":%q}`, k))
		if err := os.Rename(signing+".tmp", signing); err != nil {
			t.Fatal(err)
		}
	}
	writeKey(priv1)
	s.write(fmt.Sprintf(`upstreams:
  - {name: huntress, preset: huntress, url: %q, credential: {file: {path: %q}}}
audit_signing_placeholder: x
`, hunt.URL, filepath.Join(s.dir, "h.json")))
	// The audit block comes from newBinSetup; add signing to it.
	raw, _ := os.ReadFile(s.cfgPath)
	doc := strings.Replace(string(raw), "audit: {path: ", "audit: {signing: {credential: {file: {path: "+signing+"}}, checkpoint_interval: 1s, checkpoint_records: 5}, path: ", 1)
	doc = strings.Replace(doc, "audit_signing_placeholder: x\n", "", 1)
	mustWrite(t, s.cfgPath, doc)
	s.start()

	checkpoints := func() int { return strings.Count(s.stderr.String(), `"msg":"audit checkpoint"`) }
	waitCheckpoints := func(n int) {
		for deadline := time.Now().Add(10 * time.Second); checkpoints() < n; time.Sleep(50 * time.Millisecond) {
			s.get("/huntress/v1/account") // a checkpoint needs new records
			if time.Now().After(deadline) {
				t.Fatalf("%d checkpoints, want %d:\n%s", checkpoints(), n, s.stderr.String())
			}
		}
	}
	for i := 0; i < 12; i++ {
		if c := s.get("/huntress/v1/account"); c != 200 {
			t.Fatalf("call: %d", c)
		}
	}
	waitCheckpoints(2)
	writeKey(priv2) // rotation: the next checkpoints use the new key
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.stderr.String(), `"key_id":"`+keyID(t, pub2)+`"`); time.Sleep(50 * time.Millisecond) {
		s.get("/huntress/v1/account")
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint with the rotated key")
		}
	}
	// The signing key is not an upstream: it has its own line in /readyz,
	// /credentials (keybroker credentials) and the metrics, with the key
	// id of the last checkpoint and the age of the oldest unsigned record.
	_, rd := s.readyz()
	sg, _ := rd["audit_signing"].(map[string]any)
	if sg == nil || sg["key_id"] != keyID(t, pub2) || sg["source"] != "file" || sg["loaded"] != true {
		t.Errorf("/readyz audit_signing = %v", rd["audit_signing"])
	}
	if strings.Contains(fmt.Sprint(rd["credentials"]), "_audit_signing") {
		t.Errorf("/readyz lists the signing key as a credential: %v", rd["credentials"])
	}
	var cl bytes.Buffer
	if code := run([]string{"credentials", "--admin", "http://" + s.admin}, nil, &cl, &cl); code != 0 ||
		!strings.Contains(cl.String(), "audit signing: file "+signing) || !strings.Contains(cl.String(), "key id "+keyID(t, pub2)) ||
		strings.Contains(cl.String(), "_audit_signing") {
		t.Errorf("keybroker credentials: exit %d\n%s", code, cl.String())
	}
	if m := s.metrics(); !strings.Contains(m, "keybroker_audit_signing_usable 1") || !strings.Contains(m, "keybroker_audit_oldest_unsigned_age_seconds") ||
		strings.Contains(m, `upstream="_audit_signing"`) {
		t.Errorf("metrics: signing usable/age missing, or _audit_signing as an upstream")
	}

	// The auditor keeps a copy of the latest checkpoint, from the log.
	var auditorCopy string
	for _, l := range strings.Split(s.stderr.String(), "\n") {
		if strings.Contains(l, `"msg":"audit checkpoint"`) {
			auditorCopy = l
		}
	}
	// One short line: the checkpoint object, not the audit line beside it.
	if strings.Contains(auditorCopy, `"line":`) || len(auditorCopy) > 1000 {
		t.Errorf("the checkpoint's log line is %d bytes, with the audit line: %s", len(auditorCopy), auditorCopy)
	}
	cpFile := filepath.Join(s.dir, "auditor-checkpoint.json")
	mustWrite(t, cpFile, auditorCopy)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = s.wait()
	trail, _ := os.ReadFile(s.audit)
	if strings.Contains(string(trail)+s.stderr.String(), priv1) || strings.Contains(string(trail)+s.stderr.String(), priv2) {
		t.Fatal("a signing key is in the audit or the log")
	}
	last := lastLine(trail)
	if !strings.Contains(last, `"name":"checkpoint"`) {
		t.Errorf("the trail does not end with the shutdown checkpoint: %s", last)
	}

	both := []string{"--public-key", pub1, "--public-key", pub2}
	if code, out := verify(append([]string{s.audit, "--checkpoint", cpFile}, both...)...); code != 0 ||
		!strings.Contains(out, "every signature valid") || !strings.Contains(out, "the auditor's checkpoint") {
		t.Fatalf("intact signed trail: exit %d\n%s", code, out)
	}
	keys := filepath.Join(s.dir, "keys.txt")
	mustWrite(t, keys, "# the audit keys\npublic_key: "+pub1+"\n"+pub2+"\n")
	if code, out := verify(s.audit, "--public-keys", keys); code != 0 {
		t.Errorf("keys from a file: exit %d\n%s", code, out)
	}
	if code, out := verify(s.audit); code != 0 || !strings.Contains(out, "signatures NOT checked") {
		t.Errorf("without keys: exit %d\n%s", code, out)
	}
	_, wrong := keygen(t)
	if code, out := verify(s.audit, "--public-key", wrong); code != 1 || !strings.Contains(out, "which is not among the public keys given") {
		t.Errorf("wrong key: exit %d\n%s", code, out)
	}
	if code, out := verify(s.audit, "--public-key", pub1); code != 1 || !strings.Contains(out, "signed by key "+keyID(t, pub2)) {
		t.Errorf("only the old key after a rotation: exit %d\n%s", code, out)
	}

	// The report, through the command, over the same trail.
	var rep bytes.Buffer
	if code := run([]string{"audit", "report", s.audit, "--caller", "soar", "--format", "json"}, nil, &rep, &rep); code != 0 ||
		!strings.Contains(rep.String(), `"caller": "soar"`) || !strings.Contains(rep.String(), `"checkpoints":`) {
		t.Errorf("audit report: exit %d\n%s", code, rep.String())
	}
	// With the keys, the report checks the signatures too, and says so
	// in every format; a wrong key is a failed report (exit 1).
	rep.Reset()
	if code := run(append([]string{"audit", "report", s.audit, "--format", "html"}, both...), nil, &rep, &rep); code != 0 ||
		!strings.Contains(rep.String(), "every signature valid") || !strings.Contains(rep.String(), `class="l intact" id="chain"`) {
		t.Errorf("audit report --public-key, html: exit %d\n%s", code, rep.String())
	}
	for _, format := range []string{"table", "csv", "json"} {
		rep.Reset()
		code := run([]string{"audit", "report", s.audit, "--format", format, "--public-keys", keys}, nil, &rep, &rep)
		if want := map[string]string{"table": "every signature valid", "csv": "caller", "json": `"valid": true`}[format]; code != 0 || !strings.Contains(rep.String(), want) {
			t.Errorf("audit report --public-keys, %s: exit %d\n%s", format, code, rep.String())
		}
	}
	rep.Reset()
	if code := run([]string{"audit", "report", s.audit, "--format", "html", "--public-key", wrong}, nil, &rep, &rep); code != 1 ||
		!strings.Contains(rep.String(), "signatures NOT valid") || !strings.Contains(rep.String(), `class="l broken" id="chain"`) {
		t.Errorf("audit report with a wrong key: exit %d\n%s", code, rep.String())
	}

	// An edit with the whole hash chain recomputed.
	edited := filepath.Join(s.dir, "edited.log")
	mustWrite(t, edited, rechain(t, strings.Replace(string(trail), `"caller":"soar"`, `"caller":"nobody"`, 1)))
	if code, out := verify(edited); code != 0 {
		t.Fatalf("the recomputed chain should fool a keyless verify (that is the point): exit %d\n%s", code, out)
	}
	if code, out := verify(append([]string{edited}, both...)...); code != 1 || !strings.Contains(out, "checkpoint") {
		t.Errorf("edited and rechained: exit %d\n%s", code, out)
	}

	// A tail cut after an earlier checkpoint.
	lines := strings.SplitAfter(string(trail), "\n")
	firstCP := 0
	for i, l := range lines {
		if strings.Contains(l, `"name":"checkpoint"`) {
			firstCP = i
			break
		}
	}
	cut := filepath.Join(s.dir, "cut.log")
	mustWrite(t, cut, strings.Join(lines[:firstCP+1], ""))
	if code, out := verify(append([]string{cut}, both...)...); code != 0 {
		t.Errorf("a cut trail alone still verifies (why the auditor keeps a copy): exit %d\n%s", code, out)
	}
	if code, out := verify(append([]string{cut, "--checkpoint", cpFile}, both...)...); code != 1 || !strings.Contains(out, "records were cut off") {
		t.Errorf("cut tail against the auditor's checkpoint: exit %d\n%s", code, out)
	}

	// A torn last line.
	torn := filepath.Join(s.dir, "torn.log")
	mustWrite(t, torn, string(trail)+`{"seq":999,"prev":"ab`)
	lastSeq := strings.Count(string(trail), "\n")
	if code, out := verify(torn); code != 1 || !strings.Contains(out, "torn final line") ||
		!strings.Contains(out, fmt.Sprintf("line %d (after seq %d)", lastSeq+1, lastSeq)) {
		t.Errorf("torn: exit %d, want the line named after seq %d\n%s", code, lastSeq, out)
	}

	// report checks the chain as verify does: files that do not chain
	// (a rotated pair out of order) are reported, and exit 1.
	var out bytes.Buffer
	mid := len(lines) / 2
	first, second := filepath.Join(s.dir, "first.log"), filepath.Join(s.dir, "second.log")
	mustWrite(t, first, strings.Join(lines[:mid], ""))
	mustWrite(t, second, strings.Join(lines[mid:], ""))
	if code := run([]string{"audit", "report", first, second, "--format", "json"}, nil, &out, &out); code != 0 || !strings.Contains(out.String(), `"intact": true`) {
		t.Errorf("report on a chained pair: exit %d\n%s", code, out.String())
	}
	// Given in any order, the files are put back in order by their hash
	// links (several replicas' files arrive so).
	out.Reset()
	if code := run([]string{"audit", "report", second, first, "--format", "json"}, nil, &out, &out); code != 0 || !strings.Contains(out.String(), `"intact": true`) {
		t.Errorf("report on a chained pair given newest first: exit %d\n%s", code, out.String())
	}
	// A file missing between them: a hole, reported, and exit 1.
	out.Reset()
	holed := filepath.Join(s.dir, "holed.log")
	mustWrite(t, holed, strings.Join(lines[mid+2:], ""))
	if code := run([]string{"audit", "report", holed, first}, nil, &out, &out); code != 1 || !strings.Contains(out.String(), "chain: BROKEN at ") ||
		!strings.Contains(out.String(), "do not form one hash chain") {
		t.Errorf("report on files with a hole between them: exit %d\n%s", code, out.String())
	}

	// Rotated files, the older gzipped, verify in order.
	half := len(lines) / 2
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(strings.Join(lines[:half], "")))
	_ = zw.Close()
	older, newer := filepath.Join(s.dir, "audit.log.1.gz"), filepath.Join(s.dir, "audit.log.0")
	mustWrite(t, older, gz.String())
	mustWrite(t, newer, strings.Join(lines[half:], ""))
	if code, out := verify(append([]string{older, newer, "--checkpoint", cpFile}, both...)...); code != 0 {
		t.Errorf("rotated files: exit %d\n%s", code, out)
	}
	if code, out := verify(append([]string{newer, older}, both...)...); code != 0 {
		t.Errorf("rotated files given newest first are put in order: exit %d\n%s", code, out)
	}
}

func keyID(t *testing.T, pub string) string {
	t.Helper()
	k, err := audit.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return audit.KeyID(k)
}

func lastLine(b []byte) string {
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	return ls[len(ls)-1]
}

// rechain recomputes every prev of a trail after an edit, and every
// checkpoint's covered hash, as someone who can write the file would.
func rechain(t *testing.T, trail string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(trail, "\n"), "\n")
	var out strings.Builder
	prev := ""
	for i, l := range lines {
		if i > 0 {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			old, _ := m["prev"].(string)
			l = strings.Replace(l, `"prev":"`+old+`"`, `"prev":"`+prev+`"`, 1)
			// A checkpoint's covered hash is rewritten too; only its
			// signature cannot be.
			if ev, ok := m["event"].(map[string]any); ok && ev["name"] == "checkpoint" {
				cp := ev["checkpoint"].(map[string]any)
				l = strings.Replace(l, `"hash":"`+cp["hash"].(string)+`"`, `"hash":"`+prev+`"`, 1)
			}
		}
		s := sha256.Sum256([]byte(l))
		prev = hex.EncodeToString(s[:])
		out.WriteString(l + "\n")
	}
	return out.String()
}
