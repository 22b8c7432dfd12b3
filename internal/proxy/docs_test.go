package proxy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocs_ListEveryErrorCode: docs/errors.md, the users' reference, has a
// row for every error code keybroker replies with.
func TestDocs_ListEveryErrorCode(t *testing.T) {
	src, err := os.ReadFile("errors.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	codes := regexp.MustCompile(`Code\w+\s+=\s+"([a-z_]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(codes) < 11 {
		t.Fatalf("found only %d codes in errors.go", len(codes))
	}
	for _, c := range codes {
		if !strings.Contains(string(doc), "| `"+c[1]+"` |") {
			t.Errorf("docs/errors.md has no row for %s", c[1])
		}
	}
}
