package proxy_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// countedSync is the audit file's syncer, counted: it notes how many bytes
// of the file the last sync covered.
type countedSync struct {
	mu      sync.Mutex
	covered int64
}

func (c *countedSync) sync(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.covered = st.Size()
	return nil
}

func (c *countedSync) synced(path string) []byte {
	c.mu.Lock()
	n := c.covered
	c.mu.Unlock()
	raw, _ := os.ReadFile(path)
	return raw[:min(int64(len(raw)), n)]
}

// TestBegin_OnStableStorageBeforeTheVendorSeesAWrite: at the moment the
// vendor receives a call, its begin line is in the trail; under
// audit.sync writes and all a POST's begin is within what was synced,
// under none it is not; a GET's only under all. The end record carries
// the begin's seq.
func TestBegin_OnStableStorageBeforeTheVendorSeesAWrite(t *testing.T) {
	for _, tc := range []struct {
		mode          audit.Sync
		post, getSync bool
	}{
		{audit.SyncWrites, true, false},
		{audit.SyncAll, true, true},
		{audit.SyncNone, false, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			cs := &countedSync{}
			aud, err := audit.OpenWith(path, audit.Options{Sync: tc.mode, Syncer: cs.sync})
			if err != nil {
				t.Fatal(err)
			}
			defer aud.Close()
			type seen struct{ written, synced bool }
			var mu sync.Mutex
			atVendor := map[string]seen{}
			h := newHarness(t, harnessOpts{auditor: aud, huntress: vendortest.HuntressOptions{Received: func(r *http.Request) {
				id := []byte(`"request_id":"` + r.Header.Get("X-Request-Id") + `"`)
				raw, _ := os.ReadFile(path)
				s := seen{written: hasBegin(raw, id), synced: hasBegin(cs.synced(path), id)}
				mu.Lock()
				atVendor[r.Method] = s
				mu.Unlock()
			}}})
			for _, m := range []string{"POST", "GET"} {
				resp, _ := h.do(m, "/huntress/v1/agents/7", strings.NewReader(""), map[string]string{
					"Proxy-Authorization": "Bearer " + soarKey, "X-Request-Id": "durable-" + m})
				if resp.StatusCode == 0 {
					t.Fatal("no answer")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for m, want := range map[string]bool{"POST": tc.post, "GET": tc.getSync} {
				s, ok := atVendor[m]
				if !ok || !s.written {
					t.Errorf("%s: the vendor saw the call before its begin line was written (%+v)", m, s)
				}
				if s.synced != want {
					t.Errorf("%s: begin line synced when the vendor saw the call = %v; want %v", m, s.synced, want)
				}
			}
			raw, _ := os.ReadFile(path)
			for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
				if bytes.Contains(line, []byte(`"type":"call"`)) && !bytes.Contains(line, []byte(`"begin_seq":`)) {
					t.Errorf("a forwarded call's record without begin_seq: %s", line)
				}
			}
		})
	}
}

func hasBegin(trail, id []byte) bool {
	for _, line := range bytes.Split(trail, []byte("\n")) {
		if bytes.Contains(line, []byte(`"type":"begin"`)) && bytes.Contains(line, id) {
			return true
		}
	}
	return false
}
