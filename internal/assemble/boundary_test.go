package assemble_test

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/keybroker/keybroker/"

// TestImportBoundaries holds the package layout DESIGN and STYLE describe:
// the runtime packages never read the YAML schema (they declare their own
// types; this package assembles them), and each outside dependency stays
// in the one package that owns it.
func TestImportBoundaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}:{{join .Imports " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, ":")
		imports[pkg] = strings.Fields(deps)
	}
	// Transitively within the module: no runtime package reaches config.
	var reaches func(pkg, target string, seen map[string]bool) bool
	reaches = func(pkg, target string, seen map[string]bool) bool {
		for _, d := range imports[pkg] {
			if d == target {
				return true
			}
			if strings.HasPrefix(d, module) && !seen[d] {
				seen[d] = true
				if reaches(d, target, seen) {
					return true
				}
			}
		}
		return false
	}
	for _, p := range []string{"proxy", "egress", "reply", "rawquery", "callers", "secrets", "ratelimit", "audit", "audit/report", "metrics", "oauth", "jwtauth", "operations"} {
		if reaches(module+"internal/"+p, module+"internal/config", map[string]bool{}) {
			t.Errorf("internal/%s imports internal/config: it must take its own runtime types", p)
		}
	}
	// Each outside dependency has one owner in the module.
	owners := map[string]string{
		"github.com/hashicorp/vault/api":        "internal/secrets",
		"net/http/httputil":                     "internal/proxy",
		"golang.org/x/time/rate":                "internal/ratelimit",
		"github.com/redis/go-redis/v9":          "internal/ratelimit",
		"html/template":                         "internal/audit/report",
		"golang.org/x/oauth2":                   "internal/oauth",
		"golang.org/x/oauth2/clientcredentials": "internal/oauth",
		"github.com/go-jose/go-jose/v4":         "internal/jwtauth",
		"github.com/go-jose/go-jose/v4/jwt":     "internal/jwtauth",
		// The OpenAPI reader runs at load time only, in its one room.
		"github.com/getkin/kin-openapi/openapi2":     "internal/operations",
		"github.com/getkin/kin-openapi/openapi2conv": "internal/operations",
		"github.com/getkin/kin-openapi/openapi3":     "internal/operations",
	}
	for pkg, deps := range imports {
		// tools/, bench/ (its floor is an httputil.ReverseProxy) and the
		// test-only helpers (a Vault or Redis set up for tests) are not
		// keybroker.
		if !strings.HasPrefix(pkg, module) || strings.HasPrefix(pkg, module+"tools/") || strings.HasPrefix(pkg, module+"bench/") ||
			strings.HasSuffix(pkg, "test") {
			continue
		}
		for _, d := range deps {
			if owner, ok := owners[d]; ok && pkg != module+owner {
				t.Errorf("%s imports %s; only %s may", strings.TrimPrefix(pkg, module), d, owner)
			}
		}
	}
	// What a room may import of keybroker, and why (tailscale's deptest:
	// every rule carries its reason).
	rooms := map[string]struct {
		allowed []string
		why     string
	}{
		"egress":     {nil, "a leaf: how vendors are reached knows nothing of the request path"},
		"rawquery":   {nil, "a leaf: the one query splitter"},
		"reply":      {[]string{"egress", "rawquery"}, "the reply guard knows the vendor's origin and the query grammar, nothing else"},
		"audit":      {[]string{"rawquery", "tokenshape"}, "the trail is written by everyone and knows none of them"},
		"tokenshape": {nil, "a leaf: shapes of bearer credentials, for hygiene and audit alike"},
		"budget":     {[]string{"ratelimit"}, "refusal budgets count; the proxy writes their events"},
		"callers":    {nil, "identity and policy declare the verifiers they need; they import none of the packages that verify; an operation reaches the policy as plain strings"},
		"operations": {nil, "a leaf: the vendors' catalogues, the matcher and the OpenAPI loading"},
	}
	for pkg, room := range rooms {
		for _, d := range imports[module+"internal/"+pkg] {
			if strings.HasPrefix(d, module) && !slices.Contains(room.allowed, strings.TrimPrefix(d, module+"internal/")) {
				t.Errorf("internal/%s imports %s: %s", pkg, strings.TrimPrefix(d, module), room.why)
			}
		}
	}
	// The trail package does not know its reader: the report reads audit,
	// never the other way round.
	if reaches(module+"internal/audit", module+"internal/audit/report", map[string]bool{}) {
		t.Error("internal/audit imports internal/audit/report")
	}
	// In the proxy, only the token endpoint's file knows internal/oauth:
	// vendor tokens are behind proxy.Credentials, keybroker's own tokens
	// behind proxy.TokenIssuer and callers.TokenVerifier.
	files, err := filepath.Glob("../proxy/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no proxy files: %v", err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || filepath.Base(f) == "token.go" {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range parsed.Imports {
			if im.Path.Value == `"`+module+`internal/oauth"` {
				t.Errorf("%s imports internal/oauth: only internal/proxy/token.go may (one door per concern)", f)
			}
		}
	}
	if len(imports[module+"internal/proxy"]) == 0 {
		t.Fatal("go list listed no imports for internal/proxy: the test would pass vacuously")
	}
}
