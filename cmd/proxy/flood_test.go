package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// TestServe_AKnownCallerFloodingRefusalsIsBudgeted: through the binary,
// one caller with a valid key floods forbidden calls (403) and calls over
// its own rate limit (429) for 10 s. The audit grows by a bounded amount,
// the refusal_summary events count exactly the refusals that got no record
// of their own, and another caller keeps getting 200 throughout.
func TestServe_AKnownCallerFloodingRefusalsIsBudgeted(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10 s flood")
	}
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk", "hs_flood_secret", vendortest.HuntressOptions{Limit: 1 << 30})
	defer hunt.Close()
	soarKey, soarSum, _ := callers.NewKey()
	siemKey, siemSum, _ := callers.NewKey()
	mustWrite(t, filepath.Join(dir, "h.json"), `{"api_key":"hk","api_secret":"hs_flood_secret"}`)
	auditPath := filepath.Join(dir, "audit.log")
	cfgPath := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - {name: huntress, preset: huntress, url: %s, credential: {file: {path: %s}}, rate_limit: {requests: 1000000, per: 1m}}
callers:
  - {name: soar, key_sha256: %s}
  - name: siem
    key_sha256: %s
    allow: [{upstream: huntress, methods: [GET], paths: [/v1/agents/**]}]
    rate_limit: {requests: 2, per: 1h}
server: {refusals: {per_caller: {requests: 60, per: 1m}, summary_interval: 1s}}
audit: {path: %s}
`, hunt.URL, filepath.Join(dir, "h.json"), soarSum, siemSum, auditPath))
	listen, admin, stop, _ := startServe(t, cfgPath)
	waitReady(t, "http://"+admin+"/readyz")

	get := func(key, path string) int {
		req, _ := http.NewRequest("GET", "http://"+listen+path, nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var refusals, others atomic.Int64
	var wrong atomic.Int64
	end := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	for _, path := range []string{"/huntress/v1/admin", "/huntress/v1/agents"} { // 403, then 429 past the caller's limit
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				switch get(siemKey, path) {
				case 403, 429:
					refusals.Add(1)
				case 200:
				default:
					wrong.Add(1)
				}
			}
		}()
	}
	soarOK := 0
	for time.Now().Before(end) {
		if get(soarKey, "/huntress/v1/account") == 200 {
			soarOK++
		} else {
			others.Add(1)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if others.Load() > 0 || soarOK < 40 || wrong.Load() > 0 {
		t.Errorf("the other caller got %d OK and %d other replies; %d unexpected statuses", soarOK, others.Load(), wrong.Load())
	}

	f, err := os.Open(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	var recorded, summarised int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			Caller  string `json:"caller"`
			Outcome string `json:"outcome"`
			Event   *struct {
				Name   string `json:"name"`
				Caller string `json:"caller"`
				Count  int64  `json:"count"`
			} `json:"event"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Caller == "siem" && r.Outcome == "refused":
			recorded++
		case r.Event != nil && r.Event.Name == "refusal_summary" && r.Event.Caller == "siem":
			summarised += r.Event.Count
		}
	}
	t.Logf("%d refusals in 10 s: %d recorded, %d summarised; audit file %d bytes", refusals.Load(), recorded, summarised, st.Size())
	// The budget: 30 at once, then 60 a minute: at most 40 in 10 s.
	if recorded > 40 || recorded+summarised != refusals.Load() || refusals.Load() < 200 {
		t.Errorf("%d refusals sent, %d recorded and %d summarised", refusals.Load(), recorded, summarised)
	}
	if st.Size() > 200<<10 {
		t.Errorf("the audit grew to %d bytes", st.Size())
	}
}
