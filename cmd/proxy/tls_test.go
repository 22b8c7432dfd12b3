package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vendortest"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf; server leaves get 127.0.0.1 as their address.
func (ca *testCA) issue(t *testing.T, cn string, server bool, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePair(t *testing.T, dir, name string, c tls.Certificate) (string, string) {
	t.Helper()
	crt, key := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	kb, _ := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return crt, key
}

func TestServe_MutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := newCA(t, "callers-ca"), newCA(t, "other-ca")
	srvCrt, srvKey := writePair(t, dir, "server", ca.issue(t, "keybroker", true, time.Now().Add(time.Hour)))
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.pem, 0o600)
	hunt := vendortest.NewHuntress("hk", "hs", vendortest.HuntressOptions{})
	defer hunt.Close()
	os.WriteFile(filepath.Join(dir, "h.json"), []byte(`{"api_key":"hk","api_secret":"hs"}`), 0o600)
	cfg := filepath.Join(dir, "k.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
tls: {cert_file: %s, key_file: %s, client_ca_file: %s}
upstreams:
  - {name: huntress, preset: huntress, url: %q, credential: {file: {path: %q}}}
callers:
  - name: siem
    client_cert: {common_name: siem-collector}
audit: {path: %q}
`, srvCrt, srvKey, caFile, hunt.URL, filepath.Join(dir, "h.json"), filepath.Join(dir, "audit.log"))), 0o600)
	listen, admin, stop, _ := startServe(t, cfg)
	waitReady(t, "http://"+admin+"/readyz")

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
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
