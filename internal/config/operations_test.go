package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const opsCallers = `
  - name: siem
    key_sha256: 3b0f6c1d9a1e3c6f2b8a7d5e4c3b2a19081726354453627180918a7b6c5d4e3f
    allow:
`

func withRules(rules string) string {
	return strings.Replace(base, "vault:\n", strings.TrimPrefix(opsCallers, "\n")+rules+"vault:\n", 1)
}

// TestOperations_RulesAreCheckedAgainstTheCatalogue: an unknown operation
// is an error with a did-you-mean; a bad tier an error; tiers on an
// upstream without a catalogue an error; a paths rule that matches no
// documented operation a warning that names the rule; a good rule neither.
func TestOperations_RulesAreCheckedAgainstTheCatalogue(t *testing.T) {
	for _, tc := range []struct {
		name, rules, err, warning string
	}{
		{"misspelt operation", "      - {upstream: huntress, operations: [isolate_agnet]}\n",
			`callers[1].allow[0].operations[0]: upstream "huntress" has no operation "isolate_agnet" (did you mean isolate_agent?)`, ""},
		{"bad tier", "      - {upstream: huntress, tiers: [write]}\n", `callers[1].allow[0].tiers[0]: must be read, respond or admin, not "write"`, ""},
		{"path matching nothing", "      - {upstream: huntress, methods: [GET], paths: [/v1/agnets/**]}\n", "",
			`callers[1].allow[0]: matches none of upstream "huntress"'s documented operations`},
		{"method matching nothing there", "      - {upstream: huntress, methods: [PUT], paths: [/v1/agents/**]}\n", "",
			`callers[1].allow[0]: matches none`},
		{"good path rule", "      - {upstream: huntress, methods: [GET], paths: [/v1/agents/**]}\n", "", ""},
		{"good tier rule", "      - {upstream: huntress, tiers: [read, respond], paths: [/v1/agents/**]}\n      - {upstream: infocyte, operations: [invoke_scan]}\n", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(withRules(tc.rules)), nil)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v; want %q", err, tc.err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			w := strings.Join(cfg.Warnings(), "\n")
			if (tc.warning == "") != (w == "") || !strings.Contains(w, tc.warning) {
				t.Errorf("warnings %q; want %q", w, tc.warning)
			}
		})
	}
}

// TestOperations_FromAnOpenAPIFile: a custom upstream's catalogue from a
// spec file, its tiers overridden; tiers on an upstream without one are
// an error; a missing file is named.
func TestOperations_FromAnOpenAPIFile(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "vendor.yaml")
	if err := os.WriteFile(spec, []byte(`openapi: 3.0.3
info: {title: v, version: "1"}
paths:
  /hosts/{id}/contain:
    post: {summary: Contain Host, responses: {"200": {description: ok}}}
  /hosts:
    get: {summary: List Hosts, responses: {"200": {description: ok}}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	up := `
  - name: edr
    url: https://edr.example
    auth: {type: header, header: X-Key, field: key}
    credential: {env: {key: EDR_KEY}}
    operations: {openapi: "` + spec + `", tiers: {contain_host: respond}}
`
	doc := strings.Replace(withRules("      - {upstream: edr, tiers: [respond]}\n"), "callers:", strings.TrimPrefix(up, "\n")+"callers:", 1)
	cfg, err := Parse([]byte(doc), env(map[string]string{"EDR_KEY": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	op := cfg.Catalogue("edr").Match("POST", "/hosts/9/contain")
	if op == nil || op.Name != "contain_host" || op.Tier != "respond" {
		t.Errorf("edr POST /hosts/9/contain = %+v", op)
	}
	if _, err := Parse([]byte(strings.Replace(doc, spec, spec+".missing", 1)), env(map[string]string{"EDR_KEY": "x"})); err == nil || !strings.Contains(err.Error(), "upstreams[2].operations: openapi: cannot read") {
		t.Errorf("missing spec: %v", err)
	}
	noCat := strings.Replace(doc, "    operations: {openapi: \""+spec+"\", tiers: {contain_host: respond}}\n", "", 1)
	if _, err := Parse([]byte(noCat), env(map[string]string{"EDR_KEY": "x"})); err == nil || !strings.Contains(err.Error(), `upstream "edr" has no operation catalogue`) {
		t.Errorf("tiers without a catalogue: %v", err)
	}
}
