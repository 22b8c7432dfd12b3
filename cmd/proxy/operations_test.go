package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestOperationsCmd: the presets' catalogues as a table (both path forms
// of an operation on its line) and as JSON; an unknown upstream is a
// usage error.
func TestOperationsCmd(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"operations", "huntress"}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	table := out.String()
	for _, want := range []string{"OPERATION", "isolate_agent", "respond", "POST", "/v1/agents/{id}/isolation /v1/accounts/{account_id}/agents/{id}/isolation",
		"uninstall_agent", "admin", "execute_esql_query"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if n := strings.Count(table, "\nhuntress "); n != 61 {
		t.Errorf("%d huntress lines; want 61", n)
	}
	out.Reset()
	if code := run([]string{"operations", "infocyte", "--format", "json"}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	var ops []operationJSON
	if err := json.Unmarshal(out.Bytes(), &ops); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, op := range ops {
		found = found || (op.Name == "remove_agent" && op.Tier == "admin" && op.Method == "POST" && op.Paths[0] == "/agents/uninstall")
	}
	if !found {
		t.Errorf("no remove_agent (admin, POST /agents/uninstall) in %s", out.String())
	}
	out.Reset()
	if code := run([]string{"operations", "nosuch"}, nil, &out, &out); code != exitUsage || !strings.Contains(out.String(), "huntress, infocyte") {
		t.Errorf("unknown upstream: exit %d, %s", code, out.String())
	}
}

// TestPolicyCmd: per caller, may / partly / may not per operation, from
// the configuration file; and the callers that may call one operation.
func TestPolicyCmd(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "k.yaml")
	mustWrite(t, cfg, `
upstreams:
  - name: huntress
    preset: huntress
    credential: {file: {path: /nonexistent/h.json}}
callers:
  - name: soar
    key_sha256: 82afc692e8b389df4298b8d4464c066ef58a371b64f6b5da9f4caaaede381f40
    allow:
      - {upstream: huntress, tiers: [read, respond]}
  - name: siem
    key_sha256: 3b0f6c1d9a1e3c6f2b8a7d5e4c3b2a19081726354453627180918a7b6c5d4e3f
    allow:
      - {upstream: huntress, tiers: [read], paths: [/v1/agents/**]}
      - {upstream: huntress, methods: [POST], paths: [/v1/agents/7/isolation]}
`)
	var out bytes.Buffer
	if code := run([]string{"policy", "siem", "-config", cfg}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) >= 4 {
			lines[f[1]] = strings.Join(f[3:], " ")
		}
	}
	for op, want := range map[string]string{
		"list_agents":     "partly not /v1/accounts/{account_id}/agents",
		"isolate_agent":   "partly not /v1/agents/{id}/isolation (some values of its parameters only), /v1/accounts/{account_id}/agents/{id}/isolation",
		"uninstall_agent": "may not",
		"get_account":     "may not",
	} {
		if lines[op] != want {
			t.Errorf("siem %s: %q; want %q\n%s", op, lines[op], want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"policy", "soar", "-config", cfg}, nil, &out, &out); code != 0 || !strings.Contains(out.String(), "isolate_agent") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if !regexpLine(out.String(), "isolate_agent", "may") || !regexpLine(out.String(), "uninstall_agent", "may not") {
		t.Errorf("soar:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"policy", "--operation", "isolate_agent", "-config", cfg}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), "soar") || !strings.Contains(out.String(), "siem") || !strings.Contains(out.String(), "partly") {
		t.Errorf("--operation isolate_agent:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"policy", "--operation", "isolate_agnet", "-config", cfg}, nil, &out, &out); code != exitUsage {
		t.Errorf("unknown operation: exit %d, %s", code, out.String())
	}
}

// regexpLine: the line of op ends in state.
func regexpLine(out, op, state string) bool {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 4 && f[1] == op {
			return strings.Join(f[3:], " ") == state
		}
	}
	return false
}

// TestValidate_PrintsWarnings: a paths rule that matches no documented
// operation is a warning validate prints, exit 0.
func TestValidate_PrintsWarnings(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "k.yaml")
	mustWrite(t, cfg, `
upstreams:
  - name: huntress
    preset: huntress
    credential: {file: {path: /nonexistent/h.json}}
callers:
  - name: siem
    key_sha256: 3b0f6c1d9a1e3c6f2b8a7d5e4c3b2a19081726354453627180918a7b6c5d4e3f
    allow:
      - {upstream: huntress, methods: [GET], paths: [/v1/agnets/**]}
`)
	var out bytes.Buffer
	if code := run([]string{"validate", cfg}, nil, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), `warning: callers[0].allow[0]: matches none of upstream "huntress"'s documented operations`) {
		t.Errorf("validate:\n%s", out.String())
	}
}

// TestUsage_SpellsFlagsOneWay: the usage text and every command's flag
// list spell flags with two dashes.
func TestUsage_SpellsFlagsOneWay(t *testing.T) {
	single := regexp.MustCompile(`(^|[\s\[(|])-[a-z][a-z-]*`)
	texts := map[string]string{"usage": usage}
	for _, cmd := range []string{"serve", "validate", "hash-key", "audit", "credentials", "operations", "policy"} {
		var out bytes.Buffer
		_ = run([]string{"help", cmd}, nil, &out, &out)
		texts[cmd] = out.String()
	}
	for _, sub := range []string{"keygen", "verify", "report"} {
		var out bytes.Buffer
		_ = run([]string{"audit", sub, "--help"}, nil, &out, &out)
		texts["audit "+sub] = out.String()
	}
	for name, text := range texts {
		if m := single.FindString(text); m != "" {
			t.Errorf("%s spells a flag with one dash (%q):\n%s", name, strings.TrimSpace(m), text)
		}
		if !strings.Contains(text, "--") && name != "audit keygen" && name != "audit" {
			t.Errorf("%s lists no flag:\n%s", name, text)
		}
	}
}

// TestProgress_OnlyAtATerminal: no progress is shown when stderr is not a
// terminal; the line says the file, the bytes, the speed and the time left.
func TestProgress_OnlyAtATerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p := newProgress([]string{f.Name()}, f); p != nil {
		t.Error("progress on a file that is not a terminal")
	}
	p := &progress{files: 3, total: 300 << 20, start: time.Now().Add(-2 * time.Second)}
	p.read.Store(100 << 20)
	p.file.Store(2)
	if got := p.line(p.start.Add(2 * time.Second)); got != "file 2 of 3, 100 of 300 MiB, 52 MB/s, 4 s left" {
		t.Errorf("progress line %q", got)
	}
}
