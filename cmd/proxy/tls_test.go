package main

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
)

// testCA is vendortest's CA, with test-failing helpers.
type testCA struct{ *vendortest.CA }

func newCA(t *testing.T, name string) testCA {
	t.Helper()
	ca, err := vendortest.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca}
}

// issue signs a leaf; server leaves are for 127.0.0.1.
func (ca testCA) issue(t *testing.T, cn string, server bool, notAfter time.Time) tls.Certificate {
	t.Helper()
	var c tls.Certificate
	var err error
	if server {
		c, err = ca.Leaf([]string{"127.0.0.1"}, time.Now().Add(-2*time.Hour), notAfter)
	} else {
		c, err = ca.ClientLeaf(cn, notAfter)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writePair(t *testing.T, dir, name string, c tls.Certificate) (string, string) {
	t.Helper()
	crt, key := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	kb, _ := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err := os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return crt, key
}

func TestServe_MutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := newCA(t, "callers-ca"), newCA(t, "other-ca")
	srvCrt, srvKey := writePair(t, dir, "server", ca.issue(t, "keybroker", true, time.Now().Add(time.Hour)))
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	hunt := vendortest.NewHuntress("hk", "hs", vendortest.HuntressOptions{})
	defer hunt.Close()
	mustWrite(t, filepath.Join(dir, "h.json"), `{"api_key":"hk","api_secret":"hs"}`)
	cfg := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfg, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
tls: {cert_file: %s, key_file: %s, client_ca_file: %s}
upstreams:
  - {name: huntress, preset: huntress, url: %q, credential: {file: {path: %q}}}
callers:
  - name: siem
    client_cert: {common_name: siem-collector}
audit: {path: %q}
`, srvCrt, srvKey, caFile, hunt.URL, filepath.Join(dir, "h.json"), filepath.Join(dir, "audit.log")))
	listen, admin, stop, _ := startServe(t, cfg)
	waitReady(t, "http://"+admin+"/readyz")

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	get := func(client *tls.Certificate) (*http.Response, error) {
		tc := &tls.Config{RootCAs: roots}
		if client != nil {
			// Present it whatever CAs the server names, as an attacker would.
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client, nil }
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		return c.Get("https://" + listen + "/huntress/v1/account")
	}
	good := ca.issue(t, "siem-collector", false, time.Now().Add(time.Hour))
	wrongCA := other.issue(t, "siem-collector", false, time.Now().Add(time.Hour))
	expired := ca.issue(t, "siem-collector", false, time.Now().Add(-time.Hour))
	stranger := ca.issue(t, "someone-else", false, time.Now().Add(time.Hour))

	if resp, err := get(&good); err != nil || resp.StatusCode != 200 {
		t.Fatalf("valid certificate: %v %v", err, resp)
	}
	for name, c := range map[string]*tls.Certificate{"wrong CA": &wrongCA, "expired": &expired} {
		if resp, err := get(c); err == nil {
			t.Errorf("%s: accepted with status %d", name, resp.StatusCode)
		}
	}
	for name, c := range map[string]*tls.Certificate{"no certificate": nil, "unknown caller": &stranger} {
		resp, err := get(c)
		if err != nil || resp.StatusCode != 401 || resp.Header.Get("Keybroker-Error") != "caller_unauthenticated" {
			t.Errorf("%s: %v %v, want 401", name, err, resp)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	if !strings.Contains(string(raw), `"caller":"siem","caller_auth":"cert"`) {
		t.Errorf("no cert-identified call in the audit")
	}
	if n := hunt.Count(0); n != 1 {
		t.Errorf("vendor got %d calls, want only the valid one", n)
	}
}
