package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncCounter is an injected syncer: it counts syncs, notes how many bytes
// of the file each one covered, and can be slowed or made to fail.
type syncCounter struct {
	mu       sync.Mutex
	n        int
	covered  int64 // file size at the last sync
	inFlight atomic.Int32
	most     atomic.Int32 // the most syncs ever in flight at once
	hold     chan struct{}
	fail     error
}

func (s *syncCounter) sync(f *os.File) error {
	if n := s.inFlight.Add(1); n > s.most.Load() {
		s.most.Store(n)
	}
	defer s.inFlight.Add(-1)
	if s.hold != nil {
		<-s.hold
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.n++
	s.covered = st.Size()
	return nil
}

func (s *syncCounter) state() (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.covered
}

// openCounted opens a trail in a temporary directory with a counted
// syncer; the test's cleanup closes it.
func openCounted(t *testing.T, mode Sync) (*Writer, *syncCounter, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	sc := &syncCounter{}
	w, err := OpenWith(path, Options{Sync: mode, Syncer: sc.sync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, sc, path
}

func beginRec(method, id string) *Record {
	return &Record{Type: TypeCall, Time: Time(time.Now()), RequestID: id, Caller: "soar", Method: method,
		Upstream: "huntress", Path: "/v1/agents/7/isolation", Policy: PolicyAllowed}
}

// TestBegin_SyncedBeforeItReturnsAsAuditSyncSays: under writes a POST's
// begin line is on stable storage (covered by a sync) when Begin returns,
// a GET's is not; under all both are; under none neither.
func TestBegin_SyncedBeforeItReturnsAsAuditSyncSays(t *testing.T) {
	for _, tc := range []struct {
		mode          Sync
		post, getSync bool
	}{
		{SyncWrites, true, false},
		{SyncAll, true, true},
		{SyncNone, false, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			w, sc, path := openCounted(t, tc.mode)
			for _, m := range []struct {
				method string
				want   bool
			}{{"POST", tc.post}, {"GET", tc.getSync}, {"DELETE", tc.post}, {"HEAD", tc.getSync}} {
				before, _ := sc.state()
				if _, err := w.Begin(beginRec(m.method, "r-"+m.method)); err != nil {
					t.Fatal(err)
				}
				after, covered := sc.state()
				size := fileSize(t, path)
				if synced := after > before && covered == size; synced != m.want {
					t.Errorf("%s begin: synced before Begin returned = %v (syncs %d→%d, %d of %d bytes); want %v",
						m.method, synced, before, after, covered, size, m.want)
				}
			}
		})
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestBegin_ConcurrentWritesShareOneSync: while one sync is in flight the
// begins that arrive are written (write(2) is not blocked by the sync) and
// then share the next sync: never two at once, fewer syncs than calls.
func TestBegin_ConcurrentWritesShareOneSync(t *testing.T) {
	w, sc, path := openCounted(t, SyncWrites)
	sc.hold = make(chan struct{})
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := w.Begin(beginRec("POST", "r"+string(rune('a'+i))))
			errs <- err
		}()
	}
	// Every begin line reaches the file while the first sync is held.
	deadline := time.Now().Add(10 * time.Second)
	for bytes.Count(readFile(t, path), []byte(`"type":"begin"`)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("begin lines were not written while a sync was in flight: %d of %d", bytes.Count(readFile(t, path), []byte(`"type":"begin"`)), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(sc.hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	syncs, covered := sc.state()
	if syncs >= n || syncs < 1 || sc.most.Load() != 1 || covered != fileSize(t, path) {
		t.Errorf("%d begins took %d syncs (at most %d at once), the last covering %d of %d bytes; want fewer syncs than begins, one at a time, all covered",
			n, syncs, sc.most.Load(), covered, fileSize(t, path))
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWriter_ReadsAreSyncedWithinASecond: a GET's begin under writes waits
// for no sync, but is on stable storage soon after, by the timer.
func TestWriter_ReadsAreSyncedWithinASecond(t *testing.T) {
	w, sc, path := openCounted(t, SyncWrites)
	opened, _ := sc.state()
	if _, err := w.Begin(beginRec("GET", "r1")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, covered := sc.state()
		if n > opened && covered == fileSize(t, path) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a GET's begin line was never synced (%d syncs)", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBegin_FailedSyncRefusesUntilTheTrailIsProvenAgain: a sync that fails
// fails the begin (the call is refused) and keeps the trail failed, even
// through later successful writes, until a reopen syncs again.
func TestBegin_FailedSyncRefusesUntilTheTrailIsProvenAgain(t *testing.T) {
	w, sc, path := openCounted(t, SyncWrites)
	sc.fail = errors.New("EIO")
	seq, err := w.Begin(beginRec("POST", "r1"))
	if !errors.Is(err, ErrUnavailable) || seq == 0 {
		t.Fatalf("Begin with a failing sync = %d, %v; want its seq and ErrUnavailable", seq, err)
	}
	if err := w.Write(&Record{Type: TypeCall, Method: "POST", BeginSeq: seq, Status: 503}); err != nil {
		t.Fatal(err)
	}
	if err := w.Check(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Check after a failed sync and a good write: %v; want still failed", err)
	}
	sc.fail = nil
	w.lastProbe = time.Time{}
	if err := w.Check(); err != nil {
		t.Fatalf("Check once syncs work again: %v", err)
	}
	if !bytes.Contains(readFile(t, path), []byte(`"name":"audit_recovered"`)) {
		t.Error("no audit_recovered event")
	}
}

func events(t *testing.T, path, name string) []Event {
	t.Helper()
	var out []Event
	for _, line := range strings.Split(strings.TrimSpace(string(readFile(t, path))), "\n") {
		var l struct {
			Event *Event `json:"event"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if l.Event != nil && l.Event.Name == name {
			out = append(out, *l.Event)
		}
	}
	return out
}

// restart closes w and opens the trail again, closing interrupted calls
// and writing started as keybroker does.
func restart(t *testing.T, w *Writer, path string) (*Writer, Recovery) {
	t.Helper()
	if w != nil {
		w.Close()
	}
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := w.CloseInterrupted(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteEvent(Event{Name: EventStarted}, time.Now()); err != nil {
		t.Fatal(err)
	}
	return w, rec
}

// TestCloseInterrupted_NamesEachOpenBeginOnce: begins with no end record
// get one call_interrupted each at the next start, with the call's
// fields; ended calls and calls before the previous start are left alone;
// a second restart names nothing again; the chain verifies.
func TestCloseInterrupted_NamesEachOpenBeginOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w, _ := restart(t, nil, path)
	var seqs []uint64
	for i, id := range []string{"done", "open-1", "open-2"} {
		rec := beginRec("POST", id)
		rec.Time = Time(time.Date(2026, 12, 7, 10, 0, i, 0, time.UTC))
		seq, err := w.Begin(rec)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
		if id == "done" {
			rec.BeginSeq, rec.Status = seq, 200
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	w, rec := restart(t, w, path)
	if len(rec.Interrupted) != 2 || rec.Capped {
		t.Fatalf("recovery %+v; want the two open begins", rec)
	}
	evs := events(t, path, EventCallInterrupted)
	if len(evs) != 2 {
		t.Fatalf("%d call_interrupted events; want 2", len(evs))
	}
	for i, ev := range evs {
		want := Event{Name: EventCallInterrupted, BeginSeq: seqs[i+1], RequestID: "open-" + string(rune('1'+i)), Upstream: "huntress",
			Method: "POST", Path: "/v1/agents/7/isolation", Caller: "soar", Begun: "2026-12-07T10:00:0" + string(rune('1'+i)) + ".000Z", Detail: interruptedDetail}
		if ev.Name != want.Name || ev.BeginSeq != want.BeginSeq || ev.RequestID != want.RequestID || ev.Upstream != want.Upstream ||
			ev.Method != want.Method || ev.Path != want.Path || ev.Caller != want.Caller || ev.Begun != want.Begun {
			t.Errorf("event %d = %+v; want %+v", i, ev, want)
		}
	}
	w, rec = restart(t, w, path)
	defer w.Close()
	if len(rec.Interrupted) != 0 || len(events(t, path, EventCallInterrupted)) != 2 {
		t.Errorf("a second restart named %d calls again", len(rec.Interrupted))
	}
	if n, err := verifyFile(path); err != nil {
		t.Errorf("verify after %d records: %v", n, err)
	}
}

// TestCloseInterrupted_StopsAtTheCap: with no started event within the
// cap, begins past it are not looked at and the recovery says so.
func TestCloseInterrupted_StopsAtTheCap(t *testing.T) {
	defer func(l int64) { recoveryLimit = l }(recoveryLimit)
	recoveryLimit = 4 << 10
	path := filepath.Join(t.TempDir(), "audit.log")
	w, _ := restart(t, nil, path)
	if _, err := w.Begin(beginRec("POST", "far-back")); err != nil {
		t.Fatal(err)
	}
	writeN(t, w, 60) // about 15 KiB
	if _, err := w.Begin(beginRec("POST", "near")); err != nil {
		t.Fatal(err)
	}
	w, rec := restart(t, w, path)
	defer w.Close()
	if !rec.Capped || len(rec.Interrupted) != 1 || rec.Interrupted[0].RequestID != "near" {
		t.Errorf("recovery %+v; want only the begin within the cap, and capped", rec)
	}
}

// TestWriter_DiskFullAfterBeginNamesTheCall: the disk fills after a call's
// begin line, so its end record cannot be written; once the trail is
// writable again (audit_recovered) the call is named in call_interrupted,
// and a restart before that names it at start instead.
func TestWriter_DiskFullAfterBeginNamesTheCall(t *testing.T) {
	t.Run("recovered while running", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.log")
		w, _ := restart(t, nil, path)
		defer w.Close()
		rec := beginRec("POST", "isolate-7")
		seq, err := w.Begin(rec)
		if err != nil {
			t.Fatal(err)
		}
		w.out = shortWriter{w.file}
		rec.BeginSeq, rec.Status = seq, 200
		if err := w.Write(rec); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("end record on a full disk: %v", err)
		}
		w.out = w.file
		w.lastProbe = time.Time{}
		if err := w.Check(); err != nil {
			t.Fatal(err)
		}
		evs := events(t, path, EventCallInterrupted)
		if len(evs) != 1 || evs[0].BeginSeq != seq || evs[0].RequestID != "isolate-7" {
			t.Fatalf("call_interrupted %+v; want the call whose end record failed", evs)
		}
		raw := string(readFile(t, path))
		if strings.Index(raw, `"audit_recovered"`) > strings.Index(raw, `"call_interrupted"`) {
			t.Error("call_interrupted before audit_recovered")
		}
		w, r := restart(t, w, path)
		defer w.Close()
		if len(r.Interrupted) != 0 {
			t.Errorf("the next start named it again: %+v", r)
		}
	})
	t.Run("stopped before the disk freed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.log")
		w, _ := restart(t, nil, path)
		rec := beginRec("POST", "isolate-8")
		seq, err := w.Begin(rec)
		if err != nil {
			t.Fatal(err)
		}
		w.out = shortWriter{w.file}
		rec.BeginSeq = seq
		_ = w.Write(rec)
		w, r := restart(t, w, path)
		defer w.Close()
		if len(r.Interrupted) != 1 || r.Interrupted[0].BeginSeq != seq {
			t.Errorf("recovery at the next start %+v; want the call", r)
		}
		if n, err := verifyFile(path); err != nil {
			t.Errorf("verify after %d records: %v", n, err)
		}
	})
}

// TestCheckpoint_SignedOutsideTheLock: a checkpoint taken, then signed
// while records go on being written, covers the record it was taken at:
// it verifies, the records written meanwhile are not yet covered, and a
// checkpoint whose hash is not its record's is refused.
func TestCheckpoint_SignedOutsideTheLock(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	seed, pub, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSigner(seed)
	writeN(t, w, 5)
	cp, ok := w.NextCheckpoint()
	if !ok || cp.Seq != 5 {
		t.Fatalf("next checkpoint %+v %v", cp, ok)
	}
	writeN(t, w, 3) // while it is signed
	if err := SignCheckpoint(context.Background(), s, &cp); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AppendCheckpoint(cp, time.Now()); err != nil {
		t.Fatal(err)
	}
	key, _ := ParsePublicKey(pub)
	keys := map[string]ed25519.PublicKey{KeyID(key): key}
	rep, err := VerifyTrail([]Source{{R: bytes.NewReader(buf.Bytes())}}, VerifyOptions{Keys: keys})
	if err != nil || rep.Checkpoints != 1 || rep.Covered != 5 || rep.Uncovered != 3 {
		t.Errorf("verify %+v, %v; want one checkpoint covering seq 5, 3 records not yet covered", rep, err)
	}
	if _, ok := w.OldestUnsigned(); !ok {
		t.Error("records written while the checkpoint was signed are not reported unsigned")
	}
	// The same, but the checkpoint names another record's hash.
	var buf2 bytes.Buffer
	w2 := NewWriter(&buf2)
	writeN(t, w2, 5)
	cp2, _ := w2.NextCheckpoint()
	writeN(t, w2, 1)
	cp2.Seq = 4 // not the record whose hash it holds
	if err := SignCheckpoint(context.Background(), s, &cp2); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.AppendCheckpoint(cp2, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyTrail([]Source{{R: bytes.NewReader(buf2.Bytes())}}, VerifyOptions{Keys: keys}); err == nil || !strings.Contains(err.Error(), "records it covers were altered") {
		t.Errorf("a checkpoint on the wrong record: %v", err)
	}
}
