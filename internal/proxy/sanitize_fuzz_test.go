package proxy

import (
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/keybroker/keybroker/internal/callers"
)

// FuzzCleanPath checks that a path keybroker accepts can never be forwarded
// outside the upstream's base path, and that the vendor, decoding and
// cleaning what it receives, sees exactly the path the policy judged.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/huntress/v1/agents", "/huntress/v1/%2e%2e/x", "/a/%2F", "/a/b/", "//x", "/a/..", "/a/%41%20b", "/a/%zz", "/a\\b", "/a/%00", "/a/..;/b", "/a/%3b", "/a;x/b", "/a/.%2e;/b"} {
		f.Add(s)
	}
	const base = "/api"
	patterns := []string{"/v1/agents/**", "/v1/*", "/**", "/Agents"}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := cleanPath(raw)
		if err != nil {
			return
		}
		// Tomcat, Jetty and Spring read ";" as the start of path
		// parameters ("..;" as ".."): no accepted path holds one, raw or
		// decoded.
		if strings.Contains(p, ";") || strings.Contains(strings.ToLower(raw), "%3b") {
			t.Fatalf("raw %q accepted with a semicolon: %q", raw, p)
		}
		_, rest := splitUpstream(p)
		forwarded := base + rest

		// What goes on the wire, and what the vendor decodes from it.
		wire := (&url.URL{Path: forwarded}).EscapedPath()
		decoded, err := url.PathUnescape(wire)
		if err != nil || decoded != forwarded {
			t.Fatalf("raw %q: wire %q decodes to %q, want %q", raw, wire, decoded, forwarded)
		}
		cleaned := path.Clean(decoded)
		if cleaned != base && !strings.HasPrefix(cleaned, base+"/") {
			t.Fatalf("raw %q escapes the base path: %q", raw, cleaned)
		}
		// The vendor's clean form is the forwarded path (up to a trailing
		// slash): no dot segment or empty segment survives to change it.
		if cleaned != strings.TrimSuffix(decoded, "/") && cleaned != decoded {
			t.Fatalf("raw %q: vendor would clean %q to %q", raw, decoded, cleaned)
		}
		vendorRest := strings.TrimPrefix(decoded, base)
		if vendorRest == "" {
			vendorRest = rest
		}
		for _, pat := range patterns {
			if callers.Match(pat, rest) != callers.Match(pat, vendorRest) {
				t.Fatalf("raw %q: policy on %q differs from the vendor's %q for %s", raw, rest, vendorRest, pat)
			}
		}
	})
}
