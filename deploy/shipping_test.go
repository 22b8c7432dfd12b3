package deploy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/keybroker/keybroker/internal/audit"
)

// TestShipping_RsyslogCarriesTheTrailVerifiably runs the shipped rsyslog
// configurations with Debian's real rsyslogd, as unprivileged processes on
// loopback ports with their own work directories: the shipper follows
// keybroker's trail (imfile) and sends it over TCP with TLS; the receiver
// writes what arrives. 10,000 calls are written through keybroker's own
// writer, with a rotation (rename, then the reopen SIGHUP does) in the
// middle and a line over 8 KiB. Every line arrives, byte for byte and in
// order, and keybroker audit verify passes on the received file.
func TestShipping_RsyslogCarriesTheTrailVerifiably(t *testing.T) {
	rsyslogd, err := exec.LookPath("rsyslogd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("rsyslogd is missing: scripts/install-deps.sh installs rsyslog and rsyslog-gnutls")
		}
		t.Skip("rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)")
	}
	dir := t.TempDir()
	ca, cert, key := shippingCerts(t, dir)
	port := freePort(t)
	trail := filepath.Join(dir, "trail", "audit.log")
	received := filepath.Join(dir, "received")
	for _, d := range []string{filepath.Dir(trail), received, filepath.Join(dir, "spool-r"), filepath.Join(dir, "spool-s")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	conf := func(name string, repl ...string) string {
		raw, err := os.ReadFile(filepath.Join("shipping", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.NewReplacer(repl...).Replace(string(raw))
		out := filepath.Join(dir, name)
		if err := os.WriteFile(out, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return out
	}
	recv := conf("rsyslog-receiver.conf",
		"/var/spool/rsyslog", filepath.Join(dir, "spool-r"),
		"/etc/rsyslog.d/keybroker/siem-ca.pem", ca,
		"/etc/rsyslog.d/keybroker/siem-cert.pem", cert,
		"/etc/rsyslog.d/keybroker/siem-key.pem", key,
		`input(type="imtcp" port="6514"`, fmt.Sprintf(`input(type="imtcp" address="127.0.0.1" port="%d"`, port),
		"/var/log/keybroker-audit/%hostname%/audit.log", filepath.Join(received, "audit.log"))
	ship := conf("rsyslog-shipper.conf",
		"/var/spool/rsyslog", filepath.Join(dir, "spool-s"),
		"/etc/rsyslog.d/keybroker/siem-ca.pem", ca,
		"/var/lib/keybroker/audit/audit.log", trail,
		`target="siem.example.internal" port="6514"`, fmt.Sprintf(`target="127.0.0.1" port="%d"`, port))
	start := func(name, cfg string) {
		cmd := exec.Command(rsyslogd, "-n", "-f", cfg, "-i", filepath.Join(dir, name+".pid"))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("rsyslogd %s said:\n%s", name, out.String())
			}
		})
	}
	start("receiver", recv)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiving rsyslogd does not listen")
		}
	}
	w, err := audit.OpenWith(trail, audit.Options{Sync: audit.SyncNone, Replica: "kb-ship"})
	if err != nil {
		t.Fatal(err)
	}
	start("shipper", ship)
	call := func(i int) {
		rec := &audit.Record{Type: audit.TypeCall, Time: audit.Time(time.Now()), RequestID: fmt.Sprintf("ship-%d", i), Caller: "soar",
			CallerAuth: "key", Method: "POST", Upstream: "huntress", Path: "/v1/agents/7/isolation", Operation: "isolate_agent", Tier: "respond"}
		if i == 4321 {
			rec.Query = "note=" + strings.Repeat("long-line-", 1000) // a line over 8 KiB
		}
		seq, err := w.Begin(rec)
		if err != nil {
			t.Fatal(err)
		}
		rec.BeginSeq, rec.Status, rec.Outcome = seq, 200, audit.OutcomeForwarded
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5000; i++ {
		call(i)
	}
	// The shipper follows the file before it is rotated: something arrived.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if st, err := os.Stat(filepath.Join(received, "audit.log")); err == nil && st.Size() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing arrived at the receiver before the rotation")
		}
	}
	if err := os.Rename(trail, trail+".1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil { // what keybroker does on SIGHUP
		t.Fatal(err)
	}
	for i := 5000; i < 10000; i++ {
		call(i)
	}
	w.Close()

	var want []byte
	for _, f := range []string{trail + ".1", trail} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, b...)
	}
	got := filepath.Join(received, "audit.log")
	var have []byte
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		have, _ = os.ReadFile(got)
		if len(have) >= len(want) {
			break
		}
	}
	if !bytes.Equal(have, want) {
		wl, hl := bytes.Split(want, []byte("\n")), bytes.Split(have, []byte("\n"))
		for i := range min(len(wl), len(hl)) {
			if !bytes.Equal(wl[i], hl[i]) {
				t.Fatalf("received %d of %d lines; line %d differs:\nsent     %.200s\nreceived %.200s", len(hl)-1, len(wl)-1, i+1, wl[i], hl[i])
			}
		}
		t.Fatalf("received %d of %d lines (%d of %d bytes), the same so far", len(hl)-1, len(wl)-1, len(have), len(want))
	}
	f, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := audit.Verify(f); err != nil || n < 20000 {
		t.Errorf("audit verify of the SIEM's copy: %d records, %v", n, err)
	}
}

// shippingCerts makes a CA and the SIEM's certificate for
// siem.example.internal (the shipper checks that name), in dir.
func shippingCerts(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shipping test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "siem.example.internal"},
		DNSNames: []string{"siem.example.internal"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	caCert, _ := x509.ParseCertificate(caDER)
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", srvDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestShipping_CollectorConfigKeepsLinesWhole: the OpenTelemetry Collector
// configuration (documented, not run: Debian ships no collector) parses,
// reads the trail from the start, keeps each line as the body unparsed and
// takes lines up to 256 KiB.
func TestShipping_CollectorConfigKeepsLinesWhole(t *testing.T) {
	raw, err := os.ReadFile("shipping/otel-collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Receivers map[string]struct {
			Include    []string `yaml:"include"`
			StartAt    string   `yaml:"start_at"`
			MaxLogSize int      `yaml:"max_log_size"`
			Operators  []any    `yaml:"operators"`
		} `yaml:"receivers"`
		Service struct {
			Pipelines map[string]struct {
				Receivers []string `yaml:"receivers"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	r, ok := doc.Receivers["filelog/keybroker-audit"]
	if !ok || r.StartAt != "beginning" || r.MaxLogSize < audit.MaxLine || len(r.Operators) != 0 || len(r.Include) == 0 {
		t.Errorf("filelog receiver %+v", r)
	}
	if p := doc.Service.Pipelines["logs/keybroker-audit"]; len(p.Receivers) != 1 || p.Receivers[0] != "filelog/keybroker-audit" {
		t.Errorf("pipeline %+v", p)
	}
}
