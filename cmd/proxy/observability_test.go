package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

const (
	obsKey    = "hk_PLANTED_obs_key"
	obsSecret = "hs_PLANTED_obs_secret"
)

type obsSetup struct {
	listen, admin, audit string
	soar, siem           string
	hunt                 *vendortest.Huntress
	stop                 func() error
	stderr               *lockedBuffer
	replies              strings.Builder
}

func newObsSetup(t *testing.T, auditPath string) *obsSetup {
	t.Helper()
	dir := t.TempDir()
	s := &obsSetup{hunt: vendortest.NewHuntress(obsKey, obsSecret, vendortest.HuntressOptions{})}
	t.Cleanup(s.hunt.Close)
	var soarSum, siemSum string
	s.soar, soarSum, _ = callers.NewKey()
	s.siem, siemSum, _ = callers.NewKey()
	if auditPath == "" {
		auditPath = filepath.Join(dir, "audit.log")
	}
	s.audit = auditPath
	mustWrite(t, filepath.Join(dir, "h.json"), fmt.Sprintf(`{"api_key":%q,"api_secret":%q}`, obsKey, obsSecret))
	cfg := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfg, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - name: huntress
    preset: huntress
    url: %q
    credential: {file: {path: %q}}
    rate_limit: {requests: 3, per: 10s, burst: 1, max_wait: 0s}
    max_request_bytes: 10
callers:
  - {name: soar, key_sha256: %s}
  - name: siem
    key_sha256: %s
    allow: [{upstream: huntress, methods: [GET], paths: [/v1/agents/**]}]
audit: {path: %q}
log: {level: debug}
`, s.hunt.URL, filepath.Join(dir, "h.json"), soarSum, siemSum, auditPath))
	s.listen, s.admin, s.stop, s.stderr = startServe(t, cfg)
	return s
}

func (s *obsSetup) call(t *testing.T, method, path, key, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+s.listen+path, strings.NewReader(body))
	req.URL.Opaque = path
	if key != "" {
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.replies.WriteString(string(b) + fmt.Sprint(resp.Header))
	return resp
}

func (s *obsSetup) scrape(t *testing.T) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	return fams, string(raw)
}

// value returns the value of the sample of family name with exactly labels.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) != len(labels) {
			continue
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestObservability_EveryOutcomeAuditedAndCounted(t *testing.T) {
	s := newObsSetup(t, "")
	waitReady(t, "http://"+s.admin+"/readyz")
	type want struct {
		status           int
		outcome, caller  string
		auth, upstream   string
		path, policy, by string
		credential       bool
	}
	steps := []struct {
		method, path, key, body string
		want                    want
	}{
		{"GET", "/huntress/v1/account", s.soar, "", want{200, "forwarded", "soar", "key", "huntress", "/v1/account", "allowed", "", true}},
		{"GET", "/huntress/v1/account", "", "", want{401, "refused", "", "none", "huntress", "/v1/account", "", "", false}},
		{"GET", "/huntress/v1/account", s.siem, "", want{403, "refused", "siem", "key", "huntress", "/v1/account", "denied", "", false}},
		{"GET", "/nosuch/x", s.soar, "", want{404, "refused", "soar", "key", "nosuch", "/x", "", "", false}},
		// A form refusal is charged to the caller that proved itself (its refusal budget).
		{"GET", "/huntress/v1/%2e%2e/x", s.soar, "", want{400, "refused", "soar", "key", "", "", "", "", false}},
		{"POST", "/huntress/v1/agents", s.soar, strings.Repeat("x", 11), want{413, "refused", "soar", "key", "huntress", "/v1/agents", "allowed", "", false}},
		{"GET", "/huntress/v1/agents/1", s.siem, "", want{429, "refused", "siem", "key", "huntress", "/v1/agents/1", "allowed", "upstream", false}},
	}
	ids := map[string]want{}
	for _, st := range steps {
		resp := s.call(t, st.method, st.path, st.key, st.body)
		if resp.StatusCode != st.want.status {
			t.Fatalf("%s %s: status %d, want %d", st.method, st.path, resp.StatusCode, st.want.status)
		}
		ids[resp.Header.Get("X-Request-Id")] = st.want
	}
	fams, rawMetrics := s.scrape(t)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	f, _ := os.Open(s.audit)
	defer f.Close()
	sc := bufio.NewScanner(f)
	seen := 0
	events := map[string]bool{}
	begins := map[string]bool{}
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r["type"] == "event" {
			events[r["event"].(map[string]any)["name"].(string)] = true
			continue
		}
		if r["type"] == "begin" {
			begins[fmt.Sprint(r["seq"])] = true
			continue
		}
		if r["outcome"] == "forwarded" && !begins[fmt.Sprint(r["begin_seq"])] {
			t.Errorf("forwarded record %s does not name a begin line before it (begin_seq %v)", r["request_id"], r["begin_seq"])
		}
		if r["outcome"] == "refused" && r["begin_seq"] != nil {
			t.Errorf("refused record %s has a begin line", r["request_id"])
		}
		w, ok := ids[fmt.Sprint(r["request_id"])]
		if !ok {
			t.Errorf("unexpected record %v", r)
			continue
		}
		seen++
		str := func(k string) string {
			if v, ok := r[k]; ok {
				return fmt.Sprint(v)
			}
			return ""
		}
		got := want{int(r["status"].(float64)), str("outcome"), str("caller"), str("caller_auth"), str("upstream"),
			str("path"), str("policy"), str("ratelimited_by"), r["credential"] != nil}
		if got != w {
			t.Errorf("record %s:\n got  %+v\n want %+v", r["request_id"], got, w)
		}
		for _, k := range []string{"time", "remote_addr", "method", "bytes_in", "bytes_out", "duration_ms", "upstream_ms", "ratelimit_wait_ms", "retried", "error", "seq", "prev"} {
			if _, ok := r[k]; !ok {
				t.Errorf("record %s lacks %s", r["request_id"], k)
			}
		}
		if w.status >= 400 && !strings.HasPrefix(str("error"), map[int]string{400: "bad_request", 401: "caller_unauthenticated",
			403: "caller_forbidden", 404: "unknown_upstream", 413: "body_too_large", 429: "rate_limited"}[w.status]) {
			t.Errorf("record %d error %q", w.status, str("error"))
		}
	}
	if seen != len(steps) {
		t.Errorf("%d call records, want %d", seen, len(steps))
	}
	for _, e := range []string{"started", "credential_loaded", "shutdown"} {
		if !events[e] {
			t.Errorf("no %s event", e)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"audit", "verify", s.audit}, nil, &out, &out); code != 0 {
		t.Errorf("audit verify: %s", out.String())
	}

	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"keybroker_requests_total", map[string]string{"upstream": "huntress", "caller": "soar", "status_class": "2xx", "outcome": "forwarded", "tier": "read"}, 1},
		{"keybroker_requests_total", map[string]string{"upstream": "huntress", "caller": "none", "status_class": "4xx", "outcome": "refused", "tier": ""}, 1},
		{"keybroker_requests_total", map[string]string{"upstream": "other", "caller": "soar", "status_class": "4xx", "outcome": "refused", "tier": ""}, 2},
		{"keybroker_requests_total", map[string]string{"upstream": "huntress", "caller": "siem", "status_class": "4xx", "outcome": "refused", "tier": "read"}, 2},
		// An undocumented call (no POST /v1/agents in the spec) has no tier.
		{"keybroker_requests_total", map[string]string{"upstream": "huntress", "caller": "soar", "status_class": "4xx", "outcome": "refused", "tier": ""}, 1},
		{"keybroker_ratelimit_refusals_total", map[string]string{"upstream": "huntress", "by": "upstream"}, 1},
		// The one forwarded call holds its slot in the 3-per-10s window.
		{"keybroker_quota_in_use", map[string]string{"upstream": "huntress"}, 1},
		{"keybroker_quota_remaining", map[string]string{"upstream": "huntress"}, 2},
		{"keybroker_upstream_duration_seconds", map[string]string{"upstream": "huntress"}, 1},
		{"keybroker_credential_version", map[string]string{"upstream": "huntress", "source": "file"}, 1},
		{"keybroker_credential_usable", map[string]string{"upstream": "huntress"}, 1},
		{"keybroker_inflight_requests", map[string]string{}, 0},
		{"keybroker_audit_write_errors_total", map[string]string{}, 0},
	}
	for _, c := range checks {
		if v, ok := value(fams, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if strings.Contains(rawMetrics, "nosuch") || strings.Contains(rawMetrics, "/v1/") {
		t.Error("a raw path or unknown name became a metric label")
	}

	auditRaw, _ := os.ReadFile(s.audit)
	all := string(auditRaw) + s.stderr.String() + rawMetrics + s.replies.String()
	for _, secret := range []string{obsKey, obsSecret, s.soar, s.siem} {
		if strings.Contains(all, secret) {
			t.Errorf("planted secret %s… found in audit, log, metrics or a reply", secret[:10])
		}
	}
}

// TestObservability_UnwritableAuditRefusesCalls: the audit trail cannot be
// written (a full disk): calls get 503 audit_unavailable, /readyz says why,
// and the vendor receives nothing.
func TestObservability_UnwritableAuditRefusesCalls(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	s := newObsSetup(t, "/dev/full")
	resp := s.call(t, "GET", "/huntress/v1/account", s.soar, "")
	if resp.StatusCode != 503 || resp.Header.Get("Keybroker-Error") != "audit_unavailable" {
		t.Fatalf("status %d %s, want 503 audit_unavailable", resp.StatusCode, resp.Header.Get("Keybroker-Error"))
	}
	if n := s.hunt.Count(0); n != 0 {
		t.Errorf("the vendor received %d calls", n)
	}
	r, err := http.Get("http://" + s.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var rd readiness
	_ = json.NewDecoder(r.Body).Decode(&rd)
	r.Body.Close()
	if r.StatusCode != 503 || !strings.Contains(rd.Audit, "no space left") {
		t.Errorf("readyz %d %+v", r.StatusCode, rd)
	}
	fams, _ := s.scrape(t)
	if v, _ := value(fams, "keybroker_audit_write_errors_total", map[string]string{}); v < 1 {
		t.Errorf("audit write errors metric %v", v)
	}
}

// TestObservability_TamperingAndRotation: `proxy audit verify` names the
// first broken record; after logrotate moves the file and SIGHUP arrives,
// the new file continues the chain.
func TestObservability_TamperingAndRotation(t *testing.T) {
	s := newObsSetup(t, "")
	waitReady(t, "http://"+s.admin+"/readyz")
	s.call(t, "GET", "/huntress/v1/account", s.soar, "")
	rotated := s.audit + ".1"
	if err := os.Rename(s.audit, rotated); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.stderr.String(), "audit file reopened") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.call(t, "GET", "/huntress/v1/account", s.soar, "")
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(rotated)
	cur, err := os.ReadFile(s.audit)
	if err != nil || !strings.Contains(string(cur), `"caller":"soar"`) {
		t.Fatalf("no record in the reopened file: %v", err)
	}
	both := filepath.Join(t.TempDir(), "both.log")
	if err := os.WriteFile(both, append(old, cur...), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := run([]string{"audit", "verify", both}, nil, &out, &out); code != 0 {
		t.Fatalf("rotated files together do not verify: %s", out.String())
	}

	lines := strings.SplitAfter(string(old)+string(cur), "\n")
	lines[2] = strings.Replace(lines[2], `"seq":3`, `"seq":3 `, 1) // any edit
	lines[2] = strings.Replace(lines[2], `"type":"`, `"type": "`, 1)
	mustWrite(t, both, strings.Join(lines, ""))
	out.Reset()
	if code := run([]string{"audit", "verify", both}, nil, &out, &out); code != 1 || !strings.Contains(out.String(), "line 4") {
		t.Errorf("tampered file: exit %d: %s", code, out.String())
	}
}
