package proxy_test

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

// TestProxy_TokensInAQueryAreRefused: a JWT or a keybroker token in any
// query parameter, name or value, however escaped, is refused with 400 at
// the hygiene step (tokens are never accepted in a query), over raw TCP as
// written; nothing reaches the vendor, and the refused query is recorded
// with the token REDACTED. The drop-in slot's own parameter is no
// exception for a token; a caller key there still identifies (Infocyte's
// clients send ?access_token=<key>).
func TestProxy_TokensInAQueryAreRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	b64 := base64.RawURLEncoding.EncodeToString
	jwt := b64([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + b64([]byte(`{"sub":"system:serviceaccount:soar:wf"}`)) + ".U0lHTkFUVVJFX1BMQU5URUQ"
	kbt := "kbt.k1." + b64([]byte(`{"c":"soar","u":"huntress"}`)) + ".S0JUX1NJR05BVFVSRV9QTEFOVEVE"
	auth := "Proxy-Authorization: Bearer " + soarKey + "\r\n"
	cases := []struct{ name, target string }{
		{"JWT as assertion", "/huntress/v1/agents?assertion=" + jwt},
		{"keybroker token as t", "/huntress/v1/agents?limit=10&t=" + kbt},
		{"JWT percent-encoded", "/huntress/v1/agents?x=" + url.QueryEscape("Bearer "+jwt)},
		{"JWT with letters escaped", "/huntress/v1/agents?x=" + strings.ReplaceAll(jwt, "e", "%65")},
		{"JWT escaped twice", "/huntress/v1/agents?x=" + url.QueryEscape(url.QueryEscape(jwt))},
		{"JWT as a parameter name", "/huntress/v1/agents?" + jwt},
		{"keybroker token in the drop-in slot", "/infocyte/Agents?access_token=" + kbt},
		{"JWT in the drop-in slot", "/infocyte/Agents?access_token=" + jwt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.raw("GET " + tc.target + " HTTP/1.1\r\nHost: kb\r\n" + auth + "X-Request-Id: tq-" + strings.ReplaceAll(tc.name, " ", "-") + "\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 400 || resp.Header.Get("Keybroker-Error") != "bad_request" {
				t.Fatalf("status %d %q; want 400 bad_request", resp.StatusCode, resp.Header.Get("Keybroker-Error"))
			}
			rec := h.lastRecord("tq-" + strings.ReplaceAll(tc.name, " ", "-"))
			q, _ := rec["query"].(string)
			if rec["outcome"] != "refused" || rec["upstream_ms"] != float64(0) || !strings.Contains(q, "REDACTED") {
				t.Errorf("record %v; want refused, the vendor not reached, the token REDACTED", rec)
			}
		})
	}
	h.checkSecretsAbsent("U0lHTkFUVVJFX1BMQU5URUQ", "S0JUX1NJR05BVFVSRV9QTEFOVEVE")

	// A caller key in the slot parameter still identifies the caller.
	if resp, _ := h.do("GET", "/infocyte/Agents?access_token="+soarKey, nil, nil); resp.StatusCode != 200 {
		t.Errorf("a caller key in ?access_token=: %d; want 200", resp.StatusCode)
	}
}

// TestAudit_CallerKeyShapedValuesAreRedacted: a kbk_-shaped value in any
// parameter of a forwarded call is written as REDACTED, whatever the
// parameter's name; the vendor still gets the query as sent.
func TestAudit_CallerKeyShapedValuesAreRedacted(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	other := "kbk_" + strings.Repeat("Q", 43)
	resp, _ := h.do("GET", "/huntress/v1/agents?limit=5&note="+other, nil, map[string]string{
		"Proxy-Authorization": "Bearer " + soarKey, "X-Request-Id": "kbk-note"})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d; want 200", resp.StatusCode)
	}
	rec := h.lastRecord("kbk-note")
	if rec["query"] != "limit=5&note=REDACTED" {
		t.Errorf("query recorded as %v; want limit=5&note=REDACTED", rec["query"])
	}
	h.checkSecretsAbsent(other)
}

// TestProxy_ErrorBodiesReadAsWritten: the 401's hint names the ways of
// sending a key with "<key>" written as it reads, not HTML-escaped (the
// reply is JSON, served nosniff); the token endpoint's errors likewise.
func TestProxy_ErrorBodiesReadAsWritten(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp, body := h.do("GET", "/huntress/v1/agents", nil, nil)
	if resp.StatusCode != 401 || !strings.Contains(body, "Proxy-Authorization: Bearer <key>") || strings.Contains(body, `\u003c`) {
		t.Errorf("401 body %s", body)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", resp.Header)
	}
}
