package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// TestServe_CredentialExpiryIsVisible: a credential whose stored expiry
// has passed is in /readyz's credential_expiry (keybroker stays ready: the
// vendor is the judge), in the expiry metric and in a credential_expired
// audit event; a vendor 401 on it passes through with a Keybroker-Warning
// that says so, and the record's error too. One expiring soon is listed as
// expiring.
func TestServe_CredentialExpiryIsVisible(t *testing.T) {
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk", "the-new-secret", vendortest.HuntressOptions{})
	defer hunt.Close()
	info := vendortest.NewInfocyte(strings.Repeat("t", 64))
	defer info.Close()
	key, sum, _ := callers.NewKey()
	past := time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)
	soon := time.Now().Add(5 * 24 * time.Hour).UTC().Truncate(time.Second)
	for name, body := range map[string]string{
		"h.json": `{"api_key":"hk","api_secret":"the-old-secret","expires_at":"` + past.Format(time.RFC3339) + `"}`,
		"i.json": `{"token":"` + strings.Repeat("t", 64) + `","expires_at":"` + soon.Format(time.RFC3339) + `"}`,
	} {
		mustWrite(t, filepath.Join(dir, name), body)
	}
	auditPath := filepath.Join(dir, "audit.log")
	cfgPath := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - {name: huntress, preset: huntress, url: %s, credential: {file: {path: %s}}}
  - {name: infocyte, preset: infocyte, url: %s, credential: {file: {path: %s}}}
callers: [{name: soar, key_sha256: %s}]
audit: {path: %s}
`, hunt.URL, filepath.Join(dir, "h.json"), info.BaseURL(), filepath.Join(dir, "i.json"), sum, auditPath))
	listen, admin, stop, _ := startServe(t, cfgPath)
	waitReady(t, "http://"+admin+"/readyz")

	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var rd struct {
		Ready            bool `json:"ready"`
		CredentialExpiry struct {
			Expiring, Expired []struct {
				Upstream, Source string
				ExpiresAt        time.Time `json:"expires_at"`
			}
		} `json:"credential_expiry"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	x := rd.CredentialExpiry
	if resp.StatusCode != 200 || !rd.Ready || len(x.Expired) != 1 || x.Expired[0].Upstream != "huntress" || !x.Expired[0].ExpiresAt.Equal(past) ||
		len(x.Expiring) != 1 || x.Expiring[0].Upstream != "infocyte" || x.Expiring[0].Source != "expires_at" {
		t.Errorf("/readyz %d: %+v", resp.StatusCode, rd)
	}

	req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/account", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+key)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	want := "credential version 1 expired at 2026-01-31T00:00:00Z (from expires_at)"
	if resp.StatusCode != 401 || resp.Header.Get("Keybroker-Warning") != want || resp.Header.Get("Keybroker-Error") != "" {
		t.Errorf("vendor 401: status %d, warning %q", resp.StatusCode, resp.Header.Get("Keybroker-Warning"))
	}

	resp, err = http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), fmt.Sprintf(`keybroker_credential_expiry_timestamp_seconds{from="expires_at",upstream="huntress"} %d`, past.Unix())) &&
		!strings.Contains(string(metrics), fmt.Sprintf(`keybroker_credential_expiry_timestamp_seconds{from="expires_at",upstream="huntress"} %g`, float64(past.Unix()))) {
		t.Errorf("no expiry metric for huntress:\n%s", grepLines(string(metrics), "expiry"))
	}

	// keybroker credentials, table and JSON, from the admin listener.
	var table, js strings.Builder
	if code := run([]string{"credentials", "--admin", "http://" + admin}, nil, &table, &table); code != 0 {
		t.Fatalf("credentials: exit %d\n%s", code, table.String())
	}
	if code := run([]string{"credentials", "--admin", "http://" + admin, "--format", "json"}, nil, &js, &js); code != 0 {
		t.Fatalf("credentials --format json: exit %d\n%s", code, js.String())
	}
	t.Logf("keybroker credentials:\n%s", table.String())
	var doc credentialsDoc
	err = json.Unmarshal([]byte(js.String()), &doc)
	rows := doc.Credentials
	if err != nil || len(rows) != 2 {
		t.Fatalf("credentials JSON: %v\n%s", err, js.String())
	}
	if h := rows[0]; h.Upstream != "huntress" || h.State != "expired" || h.Vendor401 == nil || h.Vendor401Version != 1 ||
		h.ExpiresAt == nil || !h.ExpiresAt.Equal(past) || h.ExpiryFrom != "expires_at" || h.Source != "file" {
		t.Errorf("huntress row %+v", h)
	}
	if i := rows[1]; i.Upstream != "infocyte" || i.State != "expiring" || i.Vendor401 != nil {
		t.Errorf("infocyte row %+v", i)
	}
	for _, want := range []string{"UPSTREAM", "huntress", "2026-01-31 (expires_at)", "(v1)", "expired", "expiring"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, table.String())
		}
	}
	if strings.Contains(table.String()+js.String(), "the-old-secret") {
		t.Error("credentials printed a secret")
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(auditPath)
	trail := string(raw)
	if !strings.Contains(trail, `"name":"credential_expired","upstream":"huntress"`) || !strings.Contains(trail, `"name":"credential_expiring","upstream":"infocyte"`) ||
		!strings.Contains(trail, `"error":"`+want+`"`) {
		t.Errorf("the audit lacks the expiry events or the 401's error:\n%s", trail)
	}
	if strings.Contains(trail, "the-old-secret") || strings.Contains(string(metrics), "the-old-secret") {
		t.Error("a secret leaked")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
