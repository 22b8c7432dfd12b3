package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// TestServe_TokenEndpointFloodsAreBounded: through the binary, the drop-in
// token endpoint is flooded for 10 s at once with no key, with a wrong key
// (both keyless, from one address) and by a known caller without an allow
// rule for the upstream. The audit grows by a bounded amount, and every
// request is either one token_issued event or counted in exactly one
// summary: unidentified_summary for the keyless ones, the caller's
// refusal_summary for its own.
func TestServe_TokenEndpointFloodsAreBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10 s flood")
	}
	dir := t.TempDir()
	sat := vendortest.NewSAT("sat-client", "sat_flood_secret", time.Hour)
	defer sat.Close()
	soarKey, soarSum, _ := callers.NewKey()
	siemKey, siemSum, _ := callers.NewKey()
	mustWrite(t, filepath.Join(dir, "sat.json"), `{"client_id":"sat-client","client_secret":"sat_flood_secret"}`)
	mustWrite(t, filepath.Join(dir, "other.json"), `{"key":"other_flood_key"}`)
	auditPath := filepath.Join(dir, "audit.log")
	cfgPath := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - name: huntress-sat
    preset: huntress-sat
    url: %s
    auth: {type: oauth2_client_credentials, token_url: %s/oauth/token}
    credential: {file: {path: %s}}
  - {name: other, url: %s, auth: {type: header, header: X-Api-Key, field: key}, credential: {file: {path: %s}}}
callers:
  - {name: soar, key_sha256: %s}
  - name: siem
    key_sha256: %s
    allow: [{upstream: other}]
server:
  unidentified: {summary_interval: 1s}
  refusals: {summary_interval: 1s}
audit: {path: %s}
`, sat.URL, sat.URL, filepath.Join(dir, "sat.json"), sat.URL, filepath.Join(dir, "other.json"), soarSum, siemSum, auditPath))
	listen, admin, stop, _ := startServe(t, cfgPath)
	waitReady(t, "http://"+admin+"/readyz")

	post := func(form string) int {
		resp, err := http.Post("http://"+listen+"/huntress-sat/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(form))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	floods := []struct {
		name, form string
		want       []int // the answers it may get
	}{
		{"no key", "grant_type=client_credentials", []int{401, 429}},
		{"wrong key", "grant_type=client_credentials&client_id=soar&client_secret=" + url.QueryEscape(soarKey+"x"), []int{401, 429}},
		{"siem, no allow rule", "grant_type=client_credentials&client_id=siem&client_secret=" + url.QueryEscape(siemKey), []int{400}},
	}
	sent := make([]atomic.Int64, len(floods))
	var wrong atomic.Int64
	end := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	for i, f := range floods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if st := post(f.form); slices.Contains(f.want, st) {
					sent[i].Add(1)
				} else {
					wrong.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// soar, with its key, still gets a token while its address is over
	// the keyless limits: they bound records, they are no lockout.
	if st := post("grant_type=client_credentials&client_id=soar&client_secret=" + url.QueryEscape(soarKey)); st != 200 {
		t.Errorf("the right key after the flood: %d", st)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if wrong.Load() > 0 {
		t.Errorf("%d unexpected answers", wrong.Load())
	}

	f, err := os.Open(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	var keylessEvents, siemEvents, unidentified, siemSummarised, issued int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			Type  string `json:"type"`
			Event *struct {
				Name    string `json:"name"`
				Caller  string `json:"caller"`
				Outcome string `json:"outcome"`
				Count   int64  `json:"count"`
			} `json:"event"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Type == "call" {
			t.Errorf("a token request wrote a call record: %s", sc.Text())
		}
		switch ev := r.Event; {
		case ev == nil:
		case ev.Name == "token_issued" && ev.Caller == "" && ev.Outcome == "invalid_client":
			keylessEvents++
		case ev.Name == "token_issued" && ev.Caller == "siem":
			siemEvents++
		case ev.Name == "token_issued" && ev.Outcome == "issued":
			issued += ev.Count
		case ev.Name == "token_issued":
			t.Errorf("unexpected token_issued: %s", sc.Text())
		case ev.Name == "unidentified_summary":
			unidentified += ev.Count
		case ev.Name == "refusal_summary" && ev.Caller == "siem":
			siemSummarised += ev.Count
		}
	}
	keyless := sent[0].Load() + sent[1].Load()
	t.Logf("10 s: %d keyless and %d siem token requests; %d + %d events, %d + %d summarised; audit file %d bytes",
		keyless, sent[2].Load(), keylessEvents, siemEvents, unidentified, siemSummarised, st.Size())
	// Keyless: 30 at once and 60 a minute from one address: at most 40 in
	// 10 s recorded; the caller's budget likewise.
	if keylessEvents > 40 || keylessEvents+unidentified != keyless || keyless < 200 {
		t.Errorf("keyless: %d sent, %d events, %d summarised", keyless, keylessEvents, unidentified)
	}
	if siemEvents > 40 || siemEvents+siemSummarised != sent[2].Load() || sent[2].Load() < 100 {
		t.Errorf("siem: %d sent, %d events, %d summarised", sent[2].Load(), siemEvents, siemSummarised)
	}
	if issued != 1 {
		t.Errorf("%d tokens counted as issued; want 1", issued)
	}
	if st.Size() > 200<<10 {
		t.Errorf("the audit grew to %d bytes", st.Size())
	}
}
