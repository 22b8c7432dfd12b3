package proxy_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/secrets"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// Rotated credentials are proved against the vendor (the upstream's probe,
// GET /v1/account for Huntress) before any call uses them. Every scenario
// runs 50 callers in a loop while the secret changes: none of their calls
// may fail, whatever the vendor says about the new version.

const (
	newKey    = "hk_PLANTED_new_key_51d0"
	newSecret = "hs_PLANTED_new_secret_c4e2"
)

// rotationHarness is a harness whose Huntress quota is out of the way, with
// probing on.
func rotationHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, harnessOpts{
		prove:        true,
		huntressYAML: "    rate_limit: {requests: 1000000, per: 1m, burst: 1000}\n",
		huntress:     vendortest.HuntressOptions{Limit: 1 << 30},
	})
	// Version 1 of each is in use, as after the first calls.
	for _, name := range []string{"huntress", "infocyte"} {
		if _, err := h.cache.Get(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// load runs callers against Huntress until stop is called, and returns the
// statuses they got other than 200.
func load(t *testing.T, h *harness) (stop func() map[int]int) {
	t.Helper()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		bad     = map[int]int{}
		calls   atomic.Int64
		stopped atomic.Bool
	)
	client := h.srv.Client()
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopped.Load() {
				req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/huntress/v1/agents", nil)
				req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					bad[-1]++
					mu.Unlock()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				calls.Add(1)
				if resp.StatusCode != http.StatusOK {
					mu.Lock()
					if bad[resp.StatusCode] == 0 {
						t.Logf("first %d: %s", resp.StatusCode, body)
					}
					bad[resp.StatusCode]++
					mu.Unlock()
				}
			}
		}()
	}
	// Let the callers get going before the caller of load rotates, and
	// keep them going for as many calls again after.
	const each = 200
	for calls.Load() < each {
		runtime.Gosched()
	}
	return func() map[int]int {
		for n := calls.Load(); calls.Load() < n+each; {
			runtime.Gosched()
		}
		stopped.Store(true)
		wg.Wait()
		return bad
	}
}

// rotate writes the new pair and makes the cache read it now, as its
// background refresh would.
func (h *harness) rotate(key, secret string) {
	h.t.Helper()
	h.writeSecret("huntress.json", map[string]string{"api_key": key, "api_secret": secret})
	if err := h.cache.Refresh(context.Background(), "huntress"); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) eventsOf(typ string) []secrets.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []secrets.Event
	for _, ev := range h.events {
		if ev.Upstream == "huntress" && ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func (h *harness) huntressStatus() secrets.Status {
	h.t.Helper()
	for _, s := range h.cache.Status() {
		if s.Name == "huntress" {
			return s
		}
	}
	h.t.Fatal("no huntress credential status")
	return secrets.Status{}
}

// probeRecords returns the audit records of keybroker's own probes.
func (h *harness) probeRecords() []map[string]any {
	var out []map[string]any
	for _, r := range h.records() {
		if r["caller"] == "keybroker" {
			out = append(out, r)
		}
	}
	return out
}

// sentWith counts the vendor's requests that carried this API key.
func sentWith(h *harness, key string) (n int) {
	for _, r := range h.huntress.Requests() {
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(r.Header.Get("Authorization"), "Basic "))
		if strings.HasPrefix(string(raw), key+":") {
			n++
		}
	}
	return n
}

func TestRotation_AcceptedVersionSwitchesValidated(t *testing.T) {
	h := rotationHarness(t)
	stop := load(t, h)
	// The security team made a new pair; Huntress accepts both for a while.
	h.huntress.AcceptAlso([2]string{newKey, newSecret})
	h.rotate(newKey, newSecret)
	bad := stop()
	if len(bad) != 0 {
		t.Fatalf("calls failed during the rotation: %v", bad)
	}
	rot := h.eventsOf(secrets.EventRotated)
	if len(rot) != 1 || rot[0].Version != 2 || rot[0].Validated == nil || !*rot[0].Validated {
		t.Fatalf("rotated events = %+v, want one, version 2, validated", rot)
	}
	st := h.huntressStatus()
	if st.Version != 2 || st.Rejected || st.Probe.Result != "accepted" || st.Probe.Version != 2 {
		t.Fatalf("status = %+v, want version 2 in use, probe accepted", st)
	}
	// The probe went to the vendor with the new pair, and is audited.
	probes := h.probeRecords()
	if len(probes) != 1 || probes[0]["caller_auth"] != "internal" || probes[0]["path"] != "/v1/account" ||
		probes[0]["status"] != float64(200) {
		t.Fatalf("probe audit records = %v, want one GET /v1/account 200 by keybroker (internal)", probes)
	}
	if cred, _ := probes[0]["credential"].(map[string]any); cred["version"] != float64(2) {
		t.Fatalf("probe record credential = %v, want version 2", probes[0]["credential"])
	}
	// New calls use the new pair.
	before := sentWith(h, newKey)
	resp, _ := h.do(http.MethodGet, "/huntress/v1/agents", nil, bearer(soarKey))
	if resp.StatusCode != http.StatusOK || sentWith(h, newKey) != before+1 {
		t.Fatalf("call after the switch: status %d, not sent with the new pair", resp.StatusCode)
	}
	h.checkSecretsAbsent(newKey, newSecret)
}

func TestRotation_RefusedVersionIsHeldBackAndTheOldOneServes(t *testing.T) {
	h := rotationHarness(t)
	stop := load(t, h)
	// A typo in Vault: the vendor never made this pair.
	h.rotate(newKey, "hs_PLANTED_typo_0000")
	h.rotate(newKey, "hs_PLANTED_typo_0000") // a second refresh within the back-off asks nothing
	bad := stop()
	if len(bad) != 0 {
		t.Fatalf("calls failed while a bad secret sat in the source: %v", bad)
	}
	if n := sentWith(h, newKey); n != 1 {
		t.Fatalf("the vendor saw the bad pair %d times, want once (the probe, no call, no second probe inside the back-off)", n)
	}
	rej := h.eventsOf(secrets.EventRejected)
	if len(rej) != 1 || rej[0].Version != 2 || rej[0].Status != 401 || !strings.Contains(rej[0].Error, "401") {
		t.Fatalf("rejected events = %+v, want one for version 2 naming the 401", rej)
	}
	if rot := h.eventsOf(secrets.EventRotated); len(rot) != 0 {
		t.Fatalf("rotated to a refused version: %+v", rot)
	}
	st := h.huntressStatus()
	if st.Version != 1 || !st.Rejected || st.Probe.Result != "refused" || st.Probe.Version != 2 {
		t.Fatalf("status = %+v, want version 1 in use, version 2 rejected", st)
	}
	probes := h.probeRecords()
	if len(probes) != 2 || probes[0]["status"] != float64(401) || probes[1]["status"] != float64(200) {
		t.Fatalf("probe records = %v, want the new version refused (401), then the one in use accepted (200)", probes)
	}
	// The fix lands in the source: a changed value is proved at once, not
	// after the back-off (a file counts versions it served: 2 again).
	h.huntress.AcceptAlso([2]string{newKey, newSecret})
	h.rotate(newKey, newSecret)
	st = h.huntressStatus()
	if st.Version != 2 || st.Rejected || st.Probe.Result != "accepted" {
		t.Fatalf("after the fix, status = %+v, want version 2 accepted", st)
	}
	h.checkSecretsAbsent(newKey, newSecret, "hs_PLANTED_typo_0000")
}

func TestRotation_RegenerateThatRevokedTheOldPairSwitches(t *testing.T) {
	h := rotationHarness(t)
	// Huntress "regenerate": the old pair stops working the moment the new
	// one exists, before the team has written it to the source (calls in
	// that gap get the vendor's 401: nothing can help them). Once written,
	// the first call the vendor refuses rereads the source, switches at
	// once (the vendor has just proved the old pair dead) and is retried.
	h.huntress.SetCredential(newKey, newSecret)
	h.writeSecret("huntress.json", map[string]string{"api_key": newKey, "api_secret": newSecret})
	stop := load(t, h)
	bad := stop()
	if len(bad) != 0 {
		t.Fatalf("calls failed across a regenerate: %v", bad)
	}
	st := h.huntressStatus()
	if st.Version != 2 || st.Rejected {
		t.Fatalf("status = %+v, want version 2 in use", st)
	}
	if rot := h.eventsOf(secrets.EventRotated); len(rot) != 1 || rot[0].Version != 2 {
		t.Fatalf("rotated events = %+v, want one to version 2", rot)
	}
	h.checkSecretsAbsent(newKey, newSecret)
}

func TestRotation_BothRefusedSwitchesAndReportsBoth(t *testing.T) {
	h := rotationHarness(t)
	// The vendor accepts neither the pair in use nor the new one (the
	// account was reset): keeping the old one buys nothing.
	h.huntress.SetCredential("hk_someone_else", "hs_someone_else")
	h.writeSecret("huntress.json", map[string]string{"api_key": newKey, "api_secret": newSecret})
	if err := h.cache.Refresh(context.Background(), "huntress"); err != nil {
		t.Fatal(err)
	}
	rej := h.eventsOf(secrets.EventRejected)
	if len(rej) != 2 || rej[0].Version != 2 || rej[1].Version != 1 {
		t.Fatalf("rejected events = %+v, want version 2 then version 1", rej)
	}
	rot := h.eventsOf(secrets.EventRotated)
	if len(rot) != 1 || rot[0].Version != 2 || rot[0].Validated == nil || *rot[0].Validated {
		t.Fatalf("rotated events = %+v, want one to version 2, validated false", rot)
	}
	if st := h.huntressStatus(); st.Version != 2 || st.Rejected {
		t.Fatalf("status = %+v, want version 2 in use, nothing held back", st)
	}
	h.checkSecretsAbsent(newKey, newSecret)
}

func TestRotation_VendorDownSwitchesUnproven(t *testing.T) {
	h := rotationHarness(t)
	h.huntress.AcceptAlso([2]string{newKey, newSecret})
	h.huntress.SetDown(true)
	h.rotate(newKey, newSecret)
	un := h.eventsOf(secrets.EventUnproven)
	if len(un) != 1 || un[0].Version != 2 || un[0].Status != 503 || !strings.Contains(un[0].Error, "503") {
		t.Fatalf("unproven events = %+v, want one for version 2 naming the 503", un)
	}
	rot := h.eventsOf(secrets.EventRotated)
	if len(rot) != 1 || rot[0].Validated == nil || *rot[0].Validated {
		t.Fatalf("rotated events = %+v, want one, validated false", rot)
	}
	h.huntress.SetDown(false)
	resp, body := h.do(http.MethodGet, "/huntress/v1/agents", nil, bearer(soarKey))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the outage: %d %s", resp.StatusCode, body)
	}
	if st := h.huntressStatus(); st.Version != 2 || st.Probe.Result != "unknown" {
		t.Fatalf("status = %+v, want version 2, probe unknown", st)
	}
	h.checkSecretsAbsent(newKey, newSecret)
}

func TestRotation_NoProbeSwitchesAsBefore(t *testing.T) {
	// Infocyte has no probe preset and none configured: a new token is
	// used at once (rotated, validated unset), as before probes existed.
	h := rotationHarness(t)
	h.infocyte.SetToken("it_PLANTED_new_token_77a1")
	h.writeSecret("infocyte.json", map[string]string{"token": "it_PLANTED_new_token_77a1"})
	if err := h.cache.Refresh(context.Background(), "infocyte"); err != nil {
		t.Fatal(err)
	}
	var rot []secrets.Event
	h.mu.Lock()
	for _, ev := range h.events {
		if ev.Upstream == "infocyte" && ev.Type == secrets.EventRotated {
			rot = append(rot, ev)
		}
	}
	h.mu.Unlock()
	if len(rot) != 1 || rot[0].Validated != nil {
		t.Fatalf("infocyte rotated events = %+v, want one with validated unset", rot)
	}
	if len(h.probeRecords()) != 0 {
		t.Fatalf("an upstream without a probe was probed: %v", h.probeRecords())
	}
	for _, st := range h.cache.Status() {
		if st.Name == "infocyte" && !st.Probe.At.IsZero() {
			t.Fatalf("infocyte shows a last probe %+v it never had", st.Probe)
		}
	}
	h.checkSecretsAbsent("it_PLANTED_new_token_77a1")
}

// TestRotation_ProbeGoesAheadOfTheLine: with the vendor quota full and
// callers waiting in line, the probe takes the next free slot ahead of
// them, and the vendor never sees more than its limit.
func TestRotation_ProbeGoesAheadOfTheLine(t *testing.T) {
	h := newHarness(t, harnessOpts{
		prove:        true,
		huntressYAML: "    rate_limit: {requests: 4, per: 1s, burst: 4, max_wait: 30s}\n",
		huntress:     vendortest.HuntressOptions{Limit: 4, Window: time.Second},
	})
	var (
		wg      sync.WaitGroup
		stopped atomic.Bool
		mu      sync.Mutex
		bad     = map[int]int{}
	)
	const callers = 12
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopped.Load() {
				req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/huntress/v1/agents", nil)
				req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
				resp, err := h.srv.Client().Do(req)
				status := -1
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				if status != http.StatusOK {
					mu.Lock()
					bad[status]++
					mu.Unlock()
				}
			}
		}()
	}
	// Wait until the quota is in use and most callers wait in line.
	for deadline := time.Now().Add(5 * time.Second); len(h.huntress.Requests()) < 8 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	before := len(h.huntress.Requests())
	h.huntress.AcceptAlso([2]string{newKey, newSecret})
	h.rotate(newKey, newSecret)
	stopped.Store(true)
	wg.Wait()

	reqs := h.huntress.Requests()
	probe := -1
	for i, r := range reqs {
		if r.Path == "/v1/account" {
			probe = i
			break
		}
	}
	if probe < 0 {
		t.Fatal("the vendor never saw the probe")
	}
	// Calls admitted before the rotation may still arrive first (at most
	// the quota's 4); the 8 or so callers in line must not.
	if ahead := probe - before; ahead > 4 {
		t.Fatalf("%d calls reached the vendor between the rotation and its probe: the probe waited in line", ahead)
	}
	if st := h.huntressStatus(); st.Version != 2 || st.Probe.Result != "accepted" {
		t.Fatalf("status = %+v, want version 2 accepted", st)
	}
	if n := h.huntress.Count(http.StatusTooManyRequests); n != 0 {
		t.Fatalf("the vendor answered 429 %d times: the probe went around the quota", n)
	}
	if len(bad) != 0 {
		t.Fatalf("calls failed: %v", bad)
	}
	h.checkSecretsAbsent(newKey, newSecret)
}

// TestRotation_ACallersRefusalNeverPromotesARefusedVersion replays the
// red team's forced rotation: a rotated Huntress pair the vendor refuses
// is held back; then a low-privilege caller calls a path the vendor
// answers 401 for reasons of its own (the key lacks a permission). The
// version in use is proved again, the vendor accepts it, and nothing
// changes: every other call keeps working on version 1, and no rotation
// to the refused version is reported.
func TestRotation_ACallersRefusalNeverPromotesARefusedVersion(t *testing.T) {
	good := "Basic " + base64.StdEncoding.EncodeToString([]byte(huntressKey+":"+huntressSecret))
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") != good:
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"Unauthorized"}`)
		case r.URL.Path == "/v1/reseller/subscriptions":
			w.WriteHeader(http.StatusUnauthorized) // this key lacks the permission
			io.WriteString(w, `{"error":"Unauthorized"}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"account":{"id":1}}`)
		}
	}))
	t.Cleanup(vendor.Close)
	h := newHarness(t, harnessOpts{huntressURL: vendor.URL, prove: true})
	if resp, _ := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey)); resp.StatusCode != 200 {
		t.Fatalf("first call %d", resp.StatusCode)
	}
	h.writeSecret("huntress.json", map[string]string{"api_key": huntressKey, "api_secret": "hs_rotated_but_refused"})
	if err := h.cache.Refresh(context.Background(), "huntress"); err != nil {
		t.Fatal(err)
	}
	if !h.cache.Status()[0].Rejected {
		t.Fatal("the refused rotation is not held back")
	}
	for range 3 {
		if resp, _ := h.do("GET", "/huntress/v1/reseller/subscriptions", nil, bearer(siemKey)); resp.StatusCode != 401 && resp.StatusCode != 403 {
			t.Fatalf("the vendor's 401: %d", resp.StatusCode)
		}
		if resp, _ := h.do("GET", "/huntress/v1/reseller/subscriptions", nil, bearer(soarKey)); resp.StatusCode != 401 {
			t.Fatalf("the vendor's 401 reaches the caller as it is: %d", resp.StatusCode)
		}
	}
	if err := h.cache.Refresh(context.Background(), "huntress"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if resp, body := h.do("GET", "/huntress/v1/account", nil, bearer(soarKey)); resp.StatusCode != 200 {
			t.Fatalf("after the 401s: %d %s; the version in use must keep serving", resp.StatusCode, body)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range h.events {
		if ev.Type == secrets.EventRotated {
			t.Errorf("rotation reported: %+v", ev)
		}
	}
}
