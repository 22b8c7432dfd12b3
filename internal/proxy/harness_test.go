package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/oauth"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/secrets"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// Planted secrets: every test's output is searched for them.
const (
	huntressKey    = "hk_PLANTED_key_7c1e"
	huntressSecret = "hs_PLANTED_secret_93ab"
	infocyteToken  = "it_PLANTED_token_0123456789abcdef0123456789abcdef0123456789abcd"
	soarKey        = "kbk_PLANTED_soar_key_5f0e2d"
	siemKey        = "kbk_PLANTED_siem_key_a81c44"
	rogueKey       = "rk_PLANTED_rogue_key_77d0"
	satClientID    = "sat_client_4b1d"
	satSecret      = "ss_PLANTED_client_secret_c0ffee"
)

var planted = []string{huntressKey, huntressSecret, infocyteToken, soarKey, siemKey, rogueKey, satSecret}

// syncBuffer is a goroutine-safe audit sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is keybroker's request path on a loopback port in front of both
// fake vendors, with file-based credentials.
type harness struct {
	t        *testing.T
	dir      string
	huntress *vendortest.Huntress
	infocyte *vendortest.Infocyte
	rogue    *vendortest.Rogue
	auditBuf *syncBuffer
	auditor  *audit.Writer
	logs     *observer.ObservedLogs
	cache    *secrets.Cache
	creds    *oauth.Credentials
	proxy    *proxy.Proxy
	routes   proxy.Routes
	// routesLimiter is the upstream limiter the test gave (nil: local).
	routesLimiter proxy.Limiter
	srv           *httptest.Server
	bodies        []string // every body a caller got, for the leak check
	events        []secrets.Event
	mu            sync.Mutex
}

type harnessOpts struct {
	// extraUpstreamYAML is appended to each upstream entry (indented 4).
	huntressYAML string
	infocyteYAML string
	// topYAML replaces the callers section.
	callersYAML string
	huntress    vendortest.HuntressOptions
	// shareHuntress reuses another harness's Huntress fake (replicas).
	shareHuntress *vendortest.Huntress
	// upstreamLimiter replaces the local one (Redis for replicas).
	upstreamLimiter proxy.Limiter
	// topYAML is appended at the top level (policy_mode, ...).
	topYAML string
	// huntressURL replaces the fake's URL (a dead address).
	huntressURL string
	auditor     proxy.Auditor
	// readBodyTimeout and unidentified set those Routes fields.
	readBodyTimeout time.Duration
	unidentified    proxy.UnidentifiedLimits
	now             func() time.Time
	maxHeaderBytes  int
	// prove: rotated credentials are proved with the upstream's probe.
	prove bool
	// sat, when set, adds the upstream huntress-sat (preset) in front of
	// it, with satYAML appended to its entry; issuer signs keybroker's
	// tokens (replicas share one).
	sat         *vendortest.SAT
	satYAML     string
	satTokenURL string
	issuer      *oauth.Issuer
}

const defaultCallers = `
callers:
  - name: soar
    key_sha256: %s
  - name: siem
    key_sha256: %s
    allow:
      - upstream: huntress
        methods: [GET]
        paths: [/v1/agents/**, /v1/incident_reports/*]
`

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), auditBuf: &syncBuffer{}}
	if o.shareHuntress != nil {
		h.huntress = o.shareHuntress
	} else {
		h.huntress = vendortest.NewHuntress(huntressKey, huntressSecret, o.huntress)
		t.Cleanup(h.huntress.Close)
	}
	h.infocyte = vendortest.NewInfocyte(infocyteToken)
	t.Cleanup(h.infocyte.Close)
	h.rogue = vendortest.NewRogue("api_key", rogueKey)
	t.Cleanup(h.rogue.Close)
	h.writeSecret("huntress.json", map[string]string{"api_key": huntressKey, "api_secret": huntressSecret})
	h.writeSecret("infocyte.json", map[string]string{"token": infocyteToken})
	h.writeSecret("rogue.json", map[string]string{"key": rogueKey})

	callersYAML := o.callersYAML
	if callersYAML == "" {
		callersYAML = fmt.Sprintf(defaultCallers, callers.HashKey(soarKey), callers.HashKey(siemKey))
	}
	doc := `
upstreams:
  - name: huntress
    preset: huntress
    url: ${HUNTRESS_URL}
    credential: {file: {path: "${DIR}/huntress.json"}}
` + o.huntressYAML + `
  - name: infocyte
    preset: infocyte
    url: ${INFOCYTE_URL}
    credential: {file: {path: "${DIR}/infocyte.json"}}
` + o.infocyteYAML + `
  - name: rogue
    url: ${ROGUE_URL}
    auth: {type: query, param: api_key, field: key}
    credential: {file: {path: "${DIR}/rogue.json"}}
    rewrite_links: [pagination.next_page_url]
`
	satURL, satTokenURL := "", o.satTokenURL
	if o.sat != nil {
		satURL = o.sat.URL
		if satTokenURL == "" {
			satTokenURL = satURL + "/oauth/token"
		}
		h.writeSecret("sat.json", map[string]string{"client_id": satClientID, "client_secret": satSecret})
		doc += `
  - name: huntress-sat
    preset: huntress-sat
    url: ${SAT_URL}
    auth: {type: oauth2_client_credentials, token_url: "${SAT_TOKEN_URL}", scope: "accounts:read"}
    credential: {file: {path: "${DIR}/sat.json"}}
` + o.satYAML
	}
	doc += callersYAML + o.topYAML
	hURL := h.huntress.URL
	if o.huntressURL != "" {
		hURL = o.huntressURL
	}
	env := map[string]string{"HUNTRESS_URL": hURL, "INFOCYTE_URL": h.infocyte.BaseURL(), "ROGUE_URL": h.rogue.BaseURL(), "DIR": h.dir, "SAT_URL": satURL, "SAT_TOKEN_URL": satTokenURL}
	cfg, err := config.Parse([]byte(doc), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("config: %v", err)
	}

	core, logs := observer.New(zap.DebugLevel)
	h.logs = logs
	log := zap.New(core)
	parts, err := assemble.Assemble(cfg, nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	cacheOpts := parts.Cache
	cacheOpts.Log, cacheOpts.MinReread = log, time.Millisecond
	cacheOpts.OnEvent = func(ev secrets.Event) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.events = append(h.events, ev)
	}
	if o.prove {
		cacheOpts.Prove = func(ctx context.Context, name string, c secrets.Credential) (secrets.Proof, secrets.Verdict) {
			return h.creds.Prove(ctx, name, c, h.proxy.Probe)
		}
	}
	h.cache, err = secrets.NewCache(parts.Specs, cacheOpts)
	if err != nil {
		t.Fatal(err)
	}
	h.auditor = audit.NewWriter(h.auditBuf)
	var aud proxy.Auditor = h.auditor
	if o.auditor != nil {
		aud = o.auditor
	}
	// As cmd/proxy does: the vendor tokens of OAuth upstreams behind the
	// credentials, their fetches written as events.
	h.creds = oauth.NewCredentials(oauth.CredentialsOptions{Source: h.cache, Now: o.now, OnFetch: func(f oauth.Fetch) {
		if ev, ok := f.Event(); ok {
			_ = aud.WriteEvent(ev, time.Now())
		}
	}})
	h.creds.Update(assemble.TokenUpstreams(parts, h.creds.Get))
	t.Cleanup(h.creds.Close)
	routes := parts.Routes
	if o.readBodyTimeout > 0 {
		routes.ReadBodyTimeout = o.readBodyTimeout
	}
	if o.unidentified.PerSource.Requests > 0 {
		routes.Unidentified = o.unidentified
	}
	if len(parts.JWTIssuers) > 0 {
		routes.JWT = jwtauth.New(parts.JWTIssuers, jwtauth.Options{Log: log}, nil)
		t.Cleanup(func() { routes.JWT.Close(nil) })
	}
	h.routes = routes
	popts := proxy.Options{Credentials: h.creds, Auditor: aud, Log: log, UpstreamLimiter: o.upstreamLimiter, Now: o.now}
	if o.issuer != nil {
		popts.Tokens = o.issuer
	}
	h.proxy, err = proxy.New(routes, popts)
	if err != nil {
		t.Fatal(err)
	}
	// As cmd/proxy runs it: 64 KiB of headers, OPTIONS * to the proxy.
	h.srv = httptest.NewUnstartedServer(h.proxy)
	h.srv.Config.MaxHeaderBytes = config.DefaultMaxHeaderBytes
	if o.maxHeaderBytes > 0 {
		h.srv.Config.MaxHeaderBytes = o.maxHeaderBytes
	}
	h.srv.Config.DisableGeneralOptionsHandler = true
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	t.Cleanup(h.checkNoLeaks)
	return h
}

func (h *harness) writeSecret(name string, v map[string]string) {
	h.t.Helper()
	b, _ := json.Marshal(v)
	tmp := filepath.Join(h.dir, name+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(h.dir, name)); err != nil {
		h.t.Fatal(err)
	}
}

// do sends a request through keybroker and returns the reply with its
// body read.
func (h *harness) do(method, path string, body io.Reader, hdr map[string]string) (*http.Response, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return h.send(req)
}

func (h *harness) send(req *http.Request) (*http.Response, string) {
	h.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	h.mu.Lock()
	h.bodies = append(h.bodies, string(b)+fmt.Sprint(resp.Header))
	h.mu.Unlock()
	return resp, string(b)
}

func bearer(key string) map[string]string {
	return map[string]string{"Proxy-Authorization": "Bearer " + key}
}

// records returns the audit records of type call, in order.
func (h *harness) records() []map[string]any {
	h.t.Helper()
	var out []map[string]any
	for _, m := range h.auditLines() {
		if m["type"] == "call" {
			out = append(out, m)
		}
	}
	return out
}

// auditLines returns every line of the audit trail, decoded.
func (h *harness) auditLines() []map[string]any {
	h.t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(h.auditBuf.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			h.t.Fatalf("audit line is not JSON: %v", err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		h.t.Fatalf("reading the audit trail: %v", err)
	}
	return out
}

// lastRecord waits briefly for the audit record of the last call (it is
// written after the reply is sent) and returns it.
func (h *harness) lastRecord(requestID string) map[string]any {
	h.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range h.records() {
			if r["request_id"] == requestID {
				return r
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("no audit record for request %s", requestID)
	return nil
}

// checkNoLeaks searches the audit trail, every log entry and every reply a
// caller got for the planted secrets.
func (h *harness) checkNoLeaks() { h.checkSecretsAbsent(planted...) }

// checkSecretsAbsent searches the audit trail, every log entry, every
// credential event and every reply a caller got for these values.
func (h *harness) checkSecretsAbsent(values ...string) {
	h.t.Helper()
	var all strings.Builder
	all.WriteString(h.auditBuf.String())
	for _, e := range h.logs.All() {
		fmt.Fprintf(&all, "%s %v %s\n", e.Message, e.ContextMap(), e.Stack)
	}
	h.mu.Lock()
	for _, b := range h.bodies {
		all.WriteString(b)
	}
	for _, ev := range h.events {
		fmt.Fprintf(&all, "%+v\n", ev)
	}
	h.mu.Unlock()
	for _, s := range values {
		if strings.Contains(all.String(), s) {
			h.t.Errorf("planted secret %q leaked into audit, logs or a reply", s[:8]+"…")
		}
	}
}

func mustJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %q", s)
	}
	return m
}

// contractError checks keybroker's error reply: status, Keybroker-Error,
// JSON body with code, message and the request id.
func contractError(t *testing.T, resp *http.Response, body string, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if got := resp.Header.Get("Keybroker-Error"); got != code {
		t.Errorf("Keybroker-Error %q, want %q", got, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	e, _ := mustJSON(t, body)["error"].(map[string]any)
	if e["code"] != code || e["message"] == "" || e["request_id"] != resp.Header.Get("X-Request-Id") || e["request_id"] == "" {
		t.Errorf("error body %s does not follow the contract", body)
	}
}

// auditEvents returns the audit events named name, in order.
func (h *harness) auditEvents(name string) []map[string]any {
	h.t.Helper()
	var out []map[string]any
	for _, m := range h.auditLines() {
		if ev, _ := m["event"].(map[string]any); m["type"] == "event" && ev["name"] == name {
			out = append(out, ev)
		}
	}
	return out
}
