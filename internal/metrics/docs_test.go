package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDocs_ListEveryMetric: docs/metrics.md, the users' reference, names
// every metric this package exports and none it does not.
func TestDocs_ListEveryMetric(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var src []byte
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`keybroker_[a-z0-9_]+`)
	code := slices.Compact(slices.Sorted(slices.Values(name.FindAllString(string(src), -1))))
	docs := slices.Compact(slices.Sorted(slices.Values(name.FindAllString(string(doc), -1))))
	if len(code) < 20 {
		t.Fatalf("found only %d metric names in the package", len(code))
	}
	for _, n := range code {
		if !slices.Contains(docs, n) {
			t.Errorf("docs/metrics.md does not list %s", n)
		}
	}
	for _, n := range docs {
		if !slices.Contains(code, n) {
			t.Errorf("docs/metrics.md lists %s, which keybroker does not export", n)
		}
	}
}
