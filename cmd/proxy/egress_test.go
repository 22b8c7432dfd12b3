package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
)

const (
	egressKey    = "hk_egress"
	egressSecret = "hs_PLANTED_egress_secret"
)

// tlsVendor is a fake Huntress on HTTPS with a certificate from ca for
// hosts, valid from notBefore to notAfter.
func tlsVendor(t *testing.T, ca *vendortest.CA, hosts []string, notBefore, notAfter time.Time) *vendortest.Huntress {
	t.Helper()
	leaf, err := ca.Leaf(hosts, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	h := vendortest.NewHuntress(egressKey, egressSecret, vendortest.HuntressOptions{Limit: 1 << 20,
		TLS: &tls.Config{Certificates: []tls.Certificate{leaf}}})
	t.Cleanup(h.Close)
	return h
}

// getJSON sends a GET as soar and returns the status and the error body.
func (s *binSetup) getError(path string) (int, string, string) {
	s.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.listen+path, nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &body)
	return resp.StatusCode, body.Error.Code, body.Error.Message
}

// TestEgress_VerifiedHTTPS: HTTPS vendors through the real binary. With
// the vendor's CA trusted (egress.ca_file) calls succeed over HTTP/2 with
// SNI; without it, with an expired certificate, or one for another host,
// the call is a 502 that says which; metrics count the failures and show
// the certificate's expiry; validate --check-upstreams reports each.
func TestEgress_VerifiedHTTPS(t *testing.T) {
	ca, err := vendortest.NewCA("keybroker test vendor CA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := tlsVendor(t, ca, []string{"localhost"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	expired := tlsVendor(t, ca, []string{"localhost"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	otherName := tlsVendor(t, ca, []string{"vendor.example"}, now.Add(-time.Hour), now.Add(24*time.Hour))

	s := newBinSetup(t)
	caFile := filepath.Join(s.dir, "vendor-ca.pem")
	if err := ca.WriteFile(caFile); err != nil {
		t.Fatal(err)
	}
	cred := filepath.Join(s.dir, "h.json")
	mustWrite(t, cred, fmt.Sprintf(`{"api_key":%q,"api_secret":%q}`, egressKey, egressSecret))
	up := func(name, url, extra string) string {
		return fmt.Sprintf("  - {name: %s, preset: huntress, url: %q, credential: {file: {path: %q}}%s}\n", name, url, cred, extra)
	}
	s.write("egress: {ca_file: " + caFile + "}\nupstreams:\n" +
		up("good", good.LocalhostURL(), "") +
		up("untrusted", good.LocalhostURL(), `, egress: {ca_file: ""}`) +
		up("expired", expired.LocalhostURL(), "") +
		up("othername", otherName.LocalhostURL(), ""))
	s.start()

	if c := s.get("/good/v1/account"); c != 200 {
		t.Fatalf("good: %d\n%s", c, s.stderr.String())
	}
	r := good.Requests()[0]
	if r.Proto != "HTTP/2.0" || r.SNI != "localhost" {
		t.Errorf("the vendor got %s with SNI %q, want HTTP/2.0 and localhost", r.Proto, r.SNI)
	}
	for _, tc := range []struct{ path, why string }{
		{"/untrusted/v1/account", "signed by an unknown authority"},
		{"/expired/v1/account", "expired or not yet valid"},
		{"/othername/v1/account", "issued for another host name"},
	} {
		st, code, msg := s.getError(tc.path)
		if st != 502 || code != "upstream_unreachable" || !strings.Contains(msg, "could not be verified: "+tc.why) {
			t.Errorf("%s: %d %s %q", tc.path, st, code, msg)
		}
	}
	if n := len(good.Requests()) + len(expired.Requests()) + len(otherName.Requests()); n != 1 {
		t.Errorf("vendors got %d requests; only the verified one may reach a vendor", n)
	}
	metrics := s.metrics()
	for _, want := range []string{
		`keybroker_tls_handshake_failures_total{reason="unknown_authority",upstream="untrusted"} 1`,
		`keybroker_tls_handshake_failures_total{reason="expired",upstream="expired"} 1`,
		`keybroker_tls_handshake_failures_total{reason="name_mismatch",upstream="othername"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var expiry float64
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, `keybroker_upstream_cert_expiry_timestamp_seconds{upstream="good"} `); ok {
			expiry, _ = strconv.ParseFloat(v, 64)
			expiry -= float64(time.Now().Unix())
		}
	}
	if expiry < 23*3600 || expiry > 24*3600 {
		t.Errorf("certificate expiry gauge %v s, want about a day", expiry)
	}
	if strings.Contains(s.stderr.String(), egressSecret) {
		t.Error("the vendor secret is in the log")
	}

	// validate --check-upstreams: per upstream, the chain, protocol, time.
	var out bytes.Buffer
	code := run([]string{"validate", "-config", s.cfgPath, "--check-upstreams"}, nil, &out, &out)
	report := out.String()
	t.Logf("validate --check-upstreams:\n%s", report)
	if code != 1 {
		t.Errorf("exit %d with three unverifiable upstreams", code)
	}
	for _, want := range []string{
		"good       " + good.LocalhostURL() + "  direct  h2",
		"localhost (" + now.Add(24*time.Hour).UTC().Format("2006-01-02") + ") <- keybroker test vendor CA",
		"untrusted  ", "signed by an unknown authority",
		"expired or not yet valid", "issued for another host name",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(report, egressSecret) || len(good.Requests()) != 1 {
		t.Error("--check-upstreams sent a request or printed a credential")
	}
}

// tinyproxy starts Debian's tinyproxy on a free loopback port, requiring
// Basic auth user:pass when user is set. It returns its URL, its log file
// and a stop function.
func tinyproxy(t *testing.T, user, pass string) (string, string, func()) {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tinyproxy is not installed; scripts/install-deps.sh installs it")
		}
		t.Skip("tinyproxy not installed (scripts/install-deps.sh installs it)")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	logFile := filepath.Join(dir, "tinyproxy.log")
	conf := fmt.Sprintf("Port %s\nListen 127.0.0.1\nTimeout 30\nLogFile %q\nLogLevel Info\nMaxClients 50\n", port, logFile)
	if user != "" {
		conf += fmt.Sprintf("BasicAuth %s %s\n", user, pass)
	}
	mustWrite(t, filepath.Join(dir, "tinyproxy.conf"), conf)
	cmd := exec.Command(bin, "-d", "-c", filepath.Join(dir, "tinyproxy.conf"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tinyproxy did not start")
		}
	}
	return "http://" + addr, logFile, stop
}

// TestEgress_ThroughAnEgressProxy: an https upstream through a real CONNECT
// proxy (tinyproxy) that requires its own credential. Calls succeed; the
// proxy logged a CONNECT to the vendor's host and port and never saw the
// vendor credential; the vendor never saw the proxy credential; without
// the proxy credential, or with the proxy down, the 502 names the proxy.
func TestEgress_ThroughAnEgressProxy(t *testing.T) {
	const proxyUser, proxyPass = "kbproxy", "PLANTEDproxypass"
	proxyURL, proxyLog, stopProxy := tinyproxy(t, proxyUser, proxyPass)
	ca, _ := vendortest.NewCA("keybroker test vendor CA")
	vendor := tlsVendor(t, ca, []string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))

	s := newBinSetup(t)
	caFile := filepath.Join(s.dir, "vendor-ca.pem")
	_ = ca.WriteFile(caFile)
	cred := filepath.Join(s.dir, "h.json")
	mustWrite(t, cred, fmt.Sprintf(`{"api_key":%q,"api_secret":%q}`, egressKey, egressSecret))
	proxyCred := filepath.Join(s.dir, "egress.json")
	mustWrite(t, proxyCred, fmt.Sprintf(`{"username":%q,"password":%q}`, proxyUser, proxyPass))
	upstreams := fmt.Sprintf("upstreams:\n  - {name: huntress, preset: huntress, url: %q, credential: {file: {path: %q}}}\n", vendor.LocalhostURL(), cred)
	s.write(fmt.Sprintf("egress: {proxy: %s, ca_file: %s, proxy_credential: {file: {path: %s}}}\n", proxyURL, caFile, proxyCred) + upstreams)
	s.start()

	for i := 0; i < 3; i++ {
		if c := s.get("/huntress/v1/account"); c != 200 {
			t.Fatalf("through the proxy: %d\n%s", c, s.stderr.String())
		}
	}
	logRaw, _ := os.ReadFile(proxyLog)
	_, vport, _ := strings.Cut(strings.TrimPrefix(vendor.LocalhostURL(), "https://"), ":")
	if !strings.Contains(string(logRaw), "CONNECT localhost:"+vport+" HTTP/1.1") {
		t.Errorf("the proxy log has no CONNECT to the vendor:\n%s", logRaw)
	}
	if strings.Contains(string(logRaw), egressSecret) || strings.Contains(string(logRaw), "/v1/account") {
		t.Error("the proxy saw inside the tunnel")
	}
	for _, r := range vendor.Requests() {
		if r.Header.Get("Proxy-Authorization") != "" || strings.Contains(fmtHeaders(r.Header), proxyPass) {
			t.Error("the vendor saw the proxy credential")
		}
		if r.Proto != "HTTP/2.0" {
			t.Errorf("through the proxy: %s, want HTTP/2.0", r.Proto)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"validate", "-config", s.cfgPath, "--check-upstreams"}, nil, &out, &out); code != 0 ||
		!strings.Contains(out.String(), "egress proxy "+strings.TrimPrefix(proxyURL, "http://")+"  h2") {
		t.Errorf("--check-upstreams through the proxy: exit %d\n%s", code, out.String())
	}

	// Without the proxy credential, the proxy refuses the tunnel.
	s2 := newBinSetup(t)
	s2.write(fmt.Sprintf("egress: {proxy: %s, ca_file: %s}\n", proxyURL, caFile) + upstreams)
	s2.start()
	st, code, msg := s2.getError("/huntress/v1/account")
	if st != 502 || code != "upstream_unreachable" || !strings.Contains(msg, "the egress proxy "+strings.TrimPrefix(proxyURL, "http://")+" refused the tunnel") ||
		!strings.Contains(msg, "407") {
		t.Errorf("without the proxy credential: %d %s %q", st, code, msg)
	}

	// The proxy down: a 502 that names it, both for a tunnel that broke
	// with it and for a new connection.
	stopProxy()
	proxyHost := strings.TrimPrefix(proxyURL, "http://")
	for i := 0; i < 2; i++ {
		st, code, msg = s.getError("/huntress/v1/agents")
		if st != 502 || code != "upstream_unreachable" || !strings.Contains(msg, "egress proxy "+proxyHost) {
			t.Errorf("proxy down: %d %s %q", st, code, msg)
		}
	}
	if st, _, msg := s.getError("/huntress/v1/agents"); st != 502 || !strings.Contains(msg, "could not connect to the egress proxy "+proxyHost) {
		t.Errorf("proxy down, new connection: %d %q", st, msg)
	}
	for _, out := range []string{s.stderr.String(), s2.stderr.String()} {
		if strings.Contains(out, proxyPass) || strings.Contains(out, egressSecret) {
			t.Error("a credential is in the log")
		}
	}
}

func fmtHeaders(h http.Header) string {
	var b strings.Builder
	_ = h.Write(&b)
	return b.String()
}
