package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"

	"github.com/keybroker/keybroker/internal/metrics"
)

// promtool finds Debian's promtool (scripts/install-deps.sh installs it);
// CI must have it, elsewhere the test is skipped with a reason.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is missing: scripts/install-deps.sh installs Debian's prometheus package")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	return p
}

func runTool(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
	}
}

// TestPrometheus_RulesCheckAndEveryAlertFiresAndResolves: promtool checks
// the alert rules and runs their unit tests, in which each alert fires and
// resolves.
func TestPrometheus_RulesCheckAndEveryAlertFiresAndResolves(t *testing.T) {
	pt := promtool(t)
	runTool(t, "prometheus", pt, "check", "rules", "alerts.yaml")
	runTool(t, "prometheus", pt, "test", "rules", "alerts_test.yaml")
	// Every alert has a test that fires it.
	rules, tests := readFile(t, "prometheus/alerts.yaml"), readFile(t, "prometheus/alerts_test.yaml")
	for _, m := range regexp.MustCompile(`alert: (\w+)`).FindAllStringSubmatch(rules, -1) {
		if !regexp.MustCompile(`alertname: ` + m[1] + `\n\s+exp_alerts:\n\s+- exp_labels`).MatchString(tests) {
			t.Errorf("no test fires %s", m[1])
		}
	}
}

// TestGrafana_DashboardQueriesAreValidPromQL: Grafana cannot be installed
// here, so the dashboard's expressions are fed to promtool as a rules file.
func TestGrafana_DashboardQueriesAreValidPromQL(t *testing.T) {
	pt := promtool(t)
	var rules []map[string]string
	for i, e := range dashboardExprs(t) {
		rules = append(rules, map[string]string{"record": "keybroker:dashboard_" + string(rune('a'+i)), "expr": e})
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yaml"), out, 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, dir, pt, "check", "rules", "dashboard.yaml")
}

func dashboardExprs(t *testing.T) []string {
	t.Helper()
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal([]byte(readFile(t, "grafana/keybroker.json")), &d); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("only %d dashboard queries", len(exprs))
	}
	return exprs
}

// TestPrometheus_EveryMetricNamedIsExported: each keybroker_* metric the
// rules and the dashboard use is one the binary exports (its collectors'
// descriptions, not a scrape).
func TestPrometheus_EveryMetricNamedIsExported(t *testing.T) {
	exported := metrics.New(nil, nil, metrics.State{}).Names()
	if len(exported) < 25 {
		t.Fatalf("only %d exported metrics", len(exported))
	}
	used := readFile(t, "prometheus/alerts.yaml") + strings.Join(dashboardExprs(t), "\n")
	for _, m := range regexp.MustCompile(`keybroker_[a-z0-9_]+`).FindAllString(used, -1) {
		base := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(m, suf); ok && slices.Contains(exported, b) {
				base = b
			}
		}
		if !slices.Contains(exported, base) {
			t.Errorf("%s is used but keybroker does not export it", m)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
