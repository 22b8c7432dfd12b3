package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
)

func env(m map[string]string) LookupEnv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const base = `
upstreams:
  - name: huntress
    preset: huntress
    credential:
      vault: {mount: secret, path: vendors/huntress}
  - name: infocyte
    preset: infocyte
    url: https://acme.infocyte.com/api
    credential:
      vault: {mount: secret, path: vendors/infocyte}
callers:
  - name: soar
    key_sha256: 82afc692e8b389df4298b8d4464c066ef58a371b64f6b5da9f4caaaede381f40
vault:
  address: https://vault.internal:8200
  auth: {method: token, token_file: /dev/null}
`

func TestLoad_PresetsFillAndExplicitFieldsOverride(t *testing.T) {
	doc := base + `
`
	cfg, err := Parse([]byte(strings.Replace(doc, "    preset: huntress\n", "    preset: huntress\n    rate_limit: {requests: 30}\n    timeout: 5s\n", 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Upstream("huntress")
	if h.TargetURL().String() != "https://api.huntress.io" || len(h.RewriteLinks) != 1 || h.RewriteLinks[0] != "pagination.next_page_url" {
		t.Errorf("huntress url %s, rewrite_links %v", h.TargetURL(), h.RewriteLinks)
	}
	if h.Auth.Type != "basic" || h.Auth.UsernameField != "api_key" || h.Auth.PasswordField != "api_secret" {
		t.Errorf("huntress auth %+v", h.Auth)
	}
	rl := h.RateLimit
	if rl.Requests != 30 || rl.Per.D() != time.Minute || rl.Burst != 30 || rl.MaxWait.D() != DefaultMaxWait {
		t.Errorf("huntress rate limit %+v (requests overridden, the rest from the preset, burst the whole quota)", rl)
	}
	if h.Timeout.D() != 5*time.Second || h.VendorPause() != time.Minute {
		t.Errorf("timeout %v, vendor pause %v", h.Timeout.D(), h.VendorPause())
	}
	i := cfg.Upstream("infocyte")
	if i.Auth.Type != "header" || i.Auth.Header != "Authorization" || i.Auth.Field != "token" || i.Auth.Prefix != "" {
		t.Errorf("infocyte auth %+v", i.Auth)
	}
	if i.RateLimit != nil || i.TargetURL().Path != "/api" || len(i.DropinParams()) != 1 || i.DropinParams()[0] != "access_token" {
		t.Errorf("infocyte: rate %v path %q dropin %v", i.RateLimit, i.TargetURL().Path, i.DropinParams())
	}
	if cfg.Listen != DefaultListen || cfg.Admin.Listen != DefaultAdminListen || cfg.Secrets.RefreshInterval.D() != time.Minute ||
		cfg.Secrets.MaxStale.D() != time.Hour || cfg.PolicyMode != "enforce" || cfg.RateLimit.Backend != "local" || cfg.Log.Level != "info" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if len(cfg.Callers[0].KeyHash()) != 32 {
		t.Errorf("key_sha256 not decoded")
	}
}

func TestLoad_ExpandsEnvironmentInsideValuesOnly(t *testing.T) {
	doc := strings.Replace(base, "https://acme.infocyte.com/api", "${INFOCYTE_URL}", 1) + "log: {level: \"${LEVEL:-warn}\"}\nvault_extra: 1\n"
	doc = strings.Replace(doc, "vault_extra: 1\n", "", 1)
	// A value that looks like YAML structure stays one string.
	cfg, err := Parse([]byte(doc), env(map[string]string{"INFOCYTE_URL": "https://x.infocyte.com/api"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream("infocyte").URL != "https://x.infocyte.com/api" || cfg.Log.Level != "warn" {
		t.Errorf("expansion: url %q level %q", cfg.Upstream("infocyte").URL, cfg.Log.Level)
	}
	_, err = Parse([]byte(doc), env(map[string]string{"INFOCYTE_URL": "https://x\nlisten: 0.0.0.0:1"}))
	if err == nil || !strings.Contains(err.Error(), "upstreams[1].url") {
		t.Errorf("an injected newline must stay inside the value and fail as a bad URL, got %v", err)
	}
	_, err = Parse([]byte(doc), nil)
	if err == nil || err.Error() != "line 9: upstreams[1].url: environment variable INFOCYTE_URL is not set" {
		t.Errorf("missing variable: %v", err)
	}
}

func TestLoad_ErrorsNameTheFieldPath(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown key", "callers:", "colers: []\ncallers:", "colers: unknown field"},
		{"unknown nested key", "    preset: infocyte\n", "    preset: infocyte\n    auth: {fild: x}\n", "upstreams[1].auth.fild: unknown field"},
		{"bad duration", "    preset: infocyte\n", "    preset: infocyte\n    timeout: soon\n", "upstreams[1].timeout: expected a duration"},
		{"unknown preset", "preset: infocyte", "preset: crowdstrike", "upstreams[1].preset: unknown preset"},
		{"header auth without field", "    preset: infocyte\n", "    auth: {type: header, header: X-Key}\n", "upstreams[1].auth.field: required for type header"},
		{"infocyte without url", "    url: https://acme.infocyte.com/api\n", "", "upstreams[1].url: required (for this preset: https://<instance>.infocyte.com/api)"},
		{"plain http to a remote host", "https://acme.infocyte.com/api", "http://acme.infocyte.com/api", "upstreams[1].url: must be https"},
		{"credentials in url", "https://acme.infocyte.com/api", "https://u:p@acme.infocyte.com/api", "upstreams[1].url: must not carry credentials"},
		{"two credential sources", "      vault: {mount: secret, path: vendors/infocyte}\n", "      vault: {mount: secret, path: vendors/infocyte}\n      env: {key: X}\n", "upstreams[1].credential: set exactly one of vault, file or env"},
		{"vault path missing", "path: vendors/infocyte", "path: \"\"", "upstreams[1].credential.vault.path: required"},
		{"bad kv version", "path: vendors/infocyte}", "path: vendors/infocyte, kv_version: 3}", "upstreams[1].credential.vault.kv_version: must be 1 or 2"},
		{"probe that writes", "    preset: infocyte\n", "    preset: infocyte\n    probe: {method: POST, path: /Accounts}\n", "upstreams[1].probe.method: must be GET or HEAD"},
		{"probe without a path", "    preset: infocyte\n", "    preset: infocyte\n    probe: {method: get}\n", "upstreams[1].probe.path: required"},
		{"probe path not below the url", "    preset: infocyte\n", "    preset: infocyte\n    probe: {path: \"v1/me\"}\n", "upstreams[1].probe.path: required"},
		{"caller named keybroker", "  - name: soar\n", "  - name: keybroker\n", "callers[0].name: \"keybroker\" is keybroker's own name"},
		{"burst over the window", "    preset: huntress\n", "    preset: huntress\n    rate_limit: {requests: 10, per: 1s, burst: 11}\n", "upstreams[0].rate_limit.burst: must be at most requests"},
		{"caller burst breaks the bucket", "    key_sha256:", "    rate_limit: {requests: 10, per: 1s, burst: 10}\n    key_sha256:", "callers[0].rate_limit.burst: must be less than requests"},
		{"margin too long", "callers:", "ratelimit: {margin: 5s}\ncallers:", "ratelimit.margin: must be between 0s and 1s"},
		{"duplicate upstream", "name: infocyte", "name: huntress", "upstreams[1].name: duplicate upstream"},
		{"bad upstream name", "name: infocyte", "name: Info/Cyte", "upstreams[1].name: required"},
		{"bad key hash", "key_sha256: ", "key_sha256: zz86", "callers[0].key_sha256: must be 64 hex digits"},
		{"allow names unknown upstream", "    key_sha256:", "    allow: [{upstream: nope}]\n    key_sha256:", "callers[0].allow[0].upstream: no upstream named \"nope\""},
		{"bad path pattern", "    key_sha256:", "    allow: [{upstream: huntress, paths: [/v1/**/x]}]\n    key_sha256:", "callers[0].allow[0].paths[0]: ** is allowed only as a trailing /**"},
		{"misspelt method", "    key_sha256:", "    allow: [{upstream: huntress, methods: [GET, GTE]}]\n    key_sha256:", `callers[0].allow[0].methods[1]: "GTE" is not an HTTP method keybroker forwards`},
		{"made-up method", "    key_sha256:", "    allow: [{upstream: huntress, methods: [PURGE]}]\n    key_sha256:", `callers[0].allow[0].methods[0]: "PURGE" is not an HTTP method`},
		{"client cert without CA", "    key_sha256:", "    client_cert: {common_name: x}\n    key_sha256:", "callers[0].client_cert: needs tls.client_ca_file"},
		{"no vault address", "  address: https://vault.internal:8200\n", "", "vault.address: required when an upstream reads from vault"},
		{"approle without role_id", "method: token, token_file: /dev/null", "method: approle, secret_id_file: /dev/null", "vault.auth.role_id: required for method approle"},
		{"bad auth method", "method: token", "method: ldap", "vault.auth.method: must be token, approle or kubernetes"},
		{"tls file missing", "callers:", "tls: {cert_file: " + filepath.Join(dir, "none.crt") + ", key_file: /dev/null}\ncallers:", "tls.cert_file: cannot read"},
		{"bad policy mode", "callers:", "policy_mode: maybe\ncallers:", "policy_mode: must be enforce or report"},
		{"bad backend", "callers:", "ratelimit: {backend: memcached}\ncallers:", "ratelimit.backend: must be local or redis"},
		{"bad log level", "callers:", "log: {level: loud}\ncallers:", "log.level: must be debug, info, warn or error"},
		{"admin on the caller port", "callers:", "listen: 127.0.0.1:9090\ncallers:", "admin.listen: must differ from listen"},
		{"max_stale under refresh", "callers:", "secrets: {refresh_interval: 10m, max_stale: 1m}\ncallers:", "secrets.max_stale: must be at least refresh_interval"},
		{"refresh too short", "callers:", "secrets: {refresh_interval: 10ms}\ncallers:", "secrets.refresh_interval: must be at least 1s"},
		{"wrong type", "callers:", "allow_anonymous: perhaps\ncallers:", "allow_anonymous: expected true or false"},
		{"list where a mapping goes", "callers:", "admin: [1]\ncallers:", "admin: expected a mapping"},
		{"header limit too large", "callers:", "server: {max_header_bytes: 2097152}\ncallers:", "server.max_header_bytes: must be between 1024 and 1048576"},
		{"body timeout too short", "callers:", "server: {read_body_timeout: 10ms}\ncallers:", "server.read_body_timeout: must be at least 1s"},
		{"connection cap too small", "callers:", "server: {max_connections: 3}\ncallers:", "server.max_connections: must be at least 16"},
		{"unidentified quota without requests", "callers:", "server: {unidentified: {per_source: {per: 1m}}}\ncallers:", "server.unidentified.per_source.requests: must be at least 1"},
		{"bad rewrite_links", "    preset: infocyte\n", "    preset: infocyte\n    rewrite_links: [\"a..b\"]\n", "upstreams[1].rewrite_links[0]: must be dotted JSON object keys"},
		{"negative min_free_bytes", "callers:", "audit: {min_free_bytes: -1}\ncallers:", "audit.min_free_bytes: must not be negative"},
		{"unknown audit.sync", "callers:", "audit: {sync: always}\ncallers:", `audit.sync: must be writes, all or none, not "always"`},
		{"transit without a key", "callers:", "audit: {signing: {vault_transit: {mount: transit}}}\ncallers:", "audit.signing.vault_transit.key: required"},
		{"transit and a seed", "callers:", "audit: {signing: {vault_transit: {key: k}, credential: {env: {key: SEED}}}}\ncallers:", "audit.signing: set credential or vault_transit, not both"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := base
			if !strings.Contains(doc, tc.from) {
				t.Fatalf("test setup: %q not in the base document", tc.from)
			}
			doc = strings.Replace(doc, tc.from, tc.to, 1)
			_, err := Parse([]byte(doc), nil)
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoad_SecureDefaultNeedsCallersOrAnonymous(t *testing.T) {
	doc := base[:strings.Index(base, "callers:")] + base[strings.Index(base, "\nvault:")+1:]
	_, err := Parse([]byte(doc), nil)
	if err == nil || !strings.Contains(err.Error(), "callers: no callers configured") {
		t.Fatalf("want refusal without callers, got %v", err)
	}
	if _, err := Parse([]byte(doc+"allow_anonymous: true\n"), nil); err != nil {
		t.Errorf("allow_anonymous: true should start: %v", err)
	}
}

func TestLoad_ReportsEveryError(t *testing.T) {
	doc := strings.Replace(base, "preset: infocyte", "preset: nope", 1) + "log: {level: loud}\n"
	_, err := Parse([]byte(doc), nil)
	if err == nil || !strings.Contains(err.Error(), "upstreams[1].preset") || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("want both errors, got %v", err)
	}
}

func TestLoad_ErrorsNeverEchoValues(t *testing.T) {
	doc := strings.Replace(base, "callers:", "server: {max_header_count: \"${SECRETISH}\"}\ncallers:", 1)
	_, err := Parse([]byte(doc), env(map[string]string{"SECRETISH": "s3cr3t-value"}))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error must name the field, not the value: %v", err)
	}
}

func TestLoad_ExampleConfigIsValid(t *testing.T) {
	vars := map[string]string{"KEYBROKER_ROLE_ID": "role", "VAULT_ADDR": "https://vault:8200"}
	for _, f := range []string{"../../config.example.yaml", "../../dev/keybroker.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"KEYBROKER_DEV_KEY_SHA256", "SOAR_KEY_SHA256", "SIEM_KEY_SHA256"} {
			vars[v] = HashOfRandomKey(t)
		}
		if _, err := parseWithoutFiles(data, env(vars)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// parseWithoutFiles parses, ignoring errors about files absent here.
func parseWithoutFiles(data []byte, e LookupEnv) (*Config, error) {
	cfg, err := Parse(data, e)
	if err == nil {
		return cfg, nil
	}
	var kept []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.Contains(line, "cannot read") {
			kept = append(kept, line)
		}
	}
	if len(kept) == 0 {
		return nil, nil
	}
	return nil, &multiErr{strings.Join(kept, "\n")}
}

type multiErr struct{ s string }

func (m *multiErr) Error() string { return m.s }

func TestLoad_AliasBombFailsFast(t *testing.T) {
	// 200 callers each reusing a 1,000-rule allow list: 200,000 values.
	var b strings.Builder
	b.WriteString("allow_anonymous: true\nupstreams: [{name: u, url: 'https://x', auth: {type: header, header: X, field: k}, credential: {env: {key: K}}}]\ncallers:\n  - name: c0\n    allow: &r [")
	for i := range 1000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("{upstream: u}")
	}
	b.WriteString("]\n")
	for i := 1; i < 200; i++ {
		fmt.Fprintf(&b, "  - {name: c%d, allow: *r}\n", i)
	}
	start := time.Now()
	_, err := Parse([]byte(b.String()), nil)
	if err == nil || !strings.Contains(err.Error(), "too many values") || time.Since(start) > 5*time.Second {
		t.Errorf("alias bomb: %v after %v", err, time.Since(start))
	}
}

func TestPathPatternsUseThePolicyGrammar(t *testing.T) {
	for _, ok := range []string{"/", "/**", "/v1/agents", "/v1/agents/**", "/v1/*/x", "/v1/incident_reports/*"} {
		doc := strings.Replace(base, "    key_sha256:", "    allow: [{upstream: huntress, paths: ["+ok+"]}]\n    key_sha256:", 1)
		if _, err := Parse([]byte(doc), nil); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"v1", "/v1//x", "/v1/../x", "/v1/**/x", "/v1/a*", "/v1/./x"} {
		doc := strings.Replace(base, "    key_sha256:", "    allow: [{upstream: huntress, paths: [\""+bad+"\"]}]\n    key_sha256:", 1)
		if _, err := Parse([]byte(doc), nil); err == nil || !strings.Contains(err.Error(), "callers[0].allow[0].paths[0]") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzConfig(f *testing.F) {
	f.Add([]byte(base))
	f.Add([]byte("upstreams: [{name: a, url: 'https://x', auth: {type: query, param: k, field: k}, credential: {env: {key: K}}}]\nallow_anonymous: true\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, env(map[string]string{"X": "1"}))
		if err != nil {
			if strings.Contains(err.Error(), "panic") {
				t.Fatal(err)
			}
			return
		}
		// A config that loads is complete: every upstream has a target and
		// a known auth type, and there are callers or anonymous access.
		for _, u := range cfg.Upstreams {
			if u.TargetURL() == nil || (u.Auth.Type != "basic" && u.Auth.Type != "header" && u.Auth.Type != "query") {
				t.Fatalf("incomplete upstream %+v", u)
			}
		}
		if len(cfg.Callers) == 0 && !cfg.AllowAnonymous {
			t.Fatal("no callers and not anonymous")
		}
	})
}

func TestLoad_RefusesGuessableCallerKeys(t *testing.T) {
	for _, key := range []string{"", "test", "test2", "changeme", "Password", "keybroker", "soar", "soar\n"} {
		sum := sha256.Sum256([]byte(key))
		doc := strings.Replace(base, "key_sha256: ", "key_sha256: "+hex.EncodeToString(sum[:])+" #", 1)
		_, err := Parse([]byte(doc), nil)
		if err == nil || !strings.Contains(err.Error(), `callers[0].key_sha256: caller "soar": this is the hash of a guessable key`) {
			t.Errorf("key %q: want the guessable-key error naming the caller, got %v", key, err)
		}
	}
	if _, err := Parse([]byte(base), nil); err != nil {
		t.Errorf("a random key is refused: %v", err)
	}
}

// HashOfRandomKey is the key_sha256 of a fresh random key.
func HashOfRandomKey(t *testing.T) string {
	t.Helper()
	_, sum, err := callers.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestLoad_EveryErrorAtOnceAtItsLine: unknown keys, wrong types and
// semantic errors come in one run, each with its line and path, in line
// order; a typo does not cascade into "required" errors about the field it
// was meant to be.
func TestLoad_EveryErrorAtOnceAtItsLine(t *testing.T) {
	doc := `listn: 127.0.0.1:8080
upstreams:
  - name: huntress
    preset: huntress
    timeout: soon
    credential:
      vault: {mount: secret, path: vendors/huntress}
  - name: other
    url: https://api.example.com
    auth: {type: header, header: X-Key, feild: key}
    credential:
      vault: {mount: secret, pth: vendors/other}
callers:
  - name: soar
    key_sha256: nothex
    allow_anonymous: true
log: {level: loud}
vault:
  address: https://vault.internal:8200
  auth: {method: token, token_file: /dev/null}
`
	_, err := Parse([]byte(doc), nil)
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{
		"line 1: listn: unknown field (did you mean listen?)",
		"line 5: upstreams[0].timeout: expected a duration",
		"line 10: upstreams[1].auth.feild: unknown field (did you mean field?)",
		"line 12: upstreams[1].credential.vault.pth: unknown field (did you mean path?)",
		"line 15: callers[0].key_sha256: must be 64 hex digits",
		"line 16: callers[0].allow_anonymous: unknown field",
		"line 17: log.level: must be debug, info, warn or error",
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Errorf("got %d errors, want %d:\n%s", len(got), len(want), err)
	}
	for i, w := range want {
		if i >= len(got) || !strings.HasPrefix(got[i], w) {
			t.Errorf("error %d: want %q, got:\n%s", i, w, err)
		}
	}
	for _, cascade := range []string{"auth.field: required", "vault.path: required"} {
		if strings.Contains(err.Error(), cascade) {
			t.Errorf("a typo cascaded into %q", cascade)
		}
	}
}

// TestLoad_MissingFieldIsReportedAtItsParent: a required field that is
// absent is reported at the line of the mapping that lacks it.
func TestLoad_MissingFieldIsReportedAtItsParent(t *testing.T) {
	doc := strings.Replace(base, "path: vendors/infocyte", "path: \"\"", 1)
	doc = strings.Replace(doc, "    preset: infocyte\n", "    auth: {type: header, header: X-Key}\n", 1)
	_, err := Parse([]byte(doc), nil)
	for _, w := range []string{"line 8: upstreams[1].auth.field: required for type header", "line 11: upstreams[1].credential.vault.path: required"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("want %q in %v", w, err)
		}
	}
}

// TestLoad_SyntaxErrorSaysWhereTheConstructBegan: an unclosed [ or quote
// is noticed lines later; the error names both places.
func TestLoad_SyntaxErrorSaysWhereTheConstructBegan(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"listen: 127.0.0.1:8080\nadmin:\n  listen: 127.0.0.1:9090\n  pprof: [true\nlog:\n  level: info\n",
			"line 5, column 4: did not find expected ',' or ']' (while parsing a flow sequence that starts at line 4, column 10)"},
		{"listen: a\nupstreams:\n  - name: x\n    url: \"http://x\n  - name: y\n",
			"(while scanning a quoted scalar that starts at line 4, column 10)"},
		{"a: 1\nb:\n  c: 2\n   d: 3\n", "line 4, column 5: mapping values are not allowed in this context"},
		// A tab says tab, where YAML's own message does not.
		{"upstreams:\n\t- {name: huntress}\n", "line 2, column 1: a tab in the indentation: YAML indents with spaces only"},
		{"upstreams:\n  - name: huntress\n\t preset: huntress\n", "line 3, column 1: a tab in the indentation"},
	} {
		_, err := Parse([]byte(tc.doc), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want %q, got %v", tc.want, err)
		}
	}
}

// TestLoad_OneErrorAtTheCause: a misspelt key, preset or upstream name
// gets the nearest known one (a swap of two letters counts one); a
// misspelt preset causes no second error about what the preset would have
// filled, nor an unset variable a second one about its parent.
func TestLoad_OneErrorAtTheCause(t *testing.T) {
	cases := []struct{ name, from, to, want, not string }{
		{"top-level key, letters swapped", "callers:", "aduit: {path: \"\"}\ncallers:", "aduit: unknown field (did you mean audit?)", ""},
		{"preset", "preset: infocyte", "preset: infocyt", `upstreams[1].preset: unknown preset "infocyt" (did you mean infocyte?)`, "auth.type: required"},
		{"allow upstream", "    key_sha256:", "    allow: [{upstream: huntres}]\n    key_sha256:", `callers[0].allow[0].upstream: no upstream named "huntres" (did you mean huntress?)`, ""},
		{"nothing close", "callers:", "zzzzzz: 1\ncallers:", "zzzzzz: unknown field", "did you mean"},
		{"unset variable: one error", "key_sha256: 82afc692e8b389df4298b8d4464c066ef58a371b64f6b5da9f4caaaede381f40", "key_sha256: ${SOAR_KEY_SHA256}",
			"callers[0].key_sha256: environment variable SOAR_KEY_SHA256 is not set", "set key_sha256, client_cert or jwt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(base, tc.from, tc.to, 1)), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.not != "" && strings.Contains(err.Error(), tc.not)) {
				t.Errorf("error %v\nwant %q%s", err, tc.want, map[bool]string{true: " and not " + tc.not}[tc.not != ""])
			}
		})
	}
}
