package reply

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

var fuzzPaths = [][]string{{"pagination", "next_page_url"}, {"links"}}

// FuzzLinkStream: for any input that decodes as JSON, the rewritten
// output decodes as JSON, equals the input byte for byte except at the
// named fields, and every named field holds null or a URL of keybroker's.
func FuzzLinkStream(f *testing.F) {
	for _, s := range []string{
		`{"pagination":{"next_page_url":"https://api.huntress.io/v1/agents?page_token=Mg"}}`,
		`{"pagination":{"next\u005fpage_url":"https://x@API.huntress.io.:443/v1/agents"}, "links": ["/v1/a", "//evil/x", 3]}`,
		`[{"pagination":{"next_page_url":null,"next_page_url":"http:\/\/evil"}}] `,
		`{"links":{"self":"https://api.huntress.io/v1/x"},"a":[1,2.5e3,true,"\ud83d\ude00"]}`,
		`"just a string"`, `12`, ` {} `,
	} {
		f.Add([]byte(s))
	}
	target, _ := url.Parse("https://api.huntress.io/v1")
	g := NewGuard(Options{Upstream: "huntress", Target: target, CredentialParams: []string{"access_token"}})
	vendor, _ := url.Parse("https://api.huntress.io/v1/agents")
	c := Call{Origin: Origin{Scheme: "http", Host: "kb.test"}, Leaks: []string{"s3cr3t-value"}}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) {
			return
		}
		var out []byte
		var ok bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			out, ok = rewriteAll(in, fuzzPaths, func(field, v string) (string, bool) { return g.jsonLink(field, v, vendor, c) })
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("the rewrite does not end: %q", in)
		}
		if !ok {
			t.Fatalf("valid JSON was not rewritten: %q", in)
		}
		if !json.Valid(out) {
			t.Fatalf("output is not JSON: %q -> %q", in, out)
		}
		a, b := tokens(t, in), tokens(t, out)
		if len(a) != len(b) {
			t.Fatalf("%d tokens became %d: %q -> %q", len(a), len(b), in, out)
		}
		match := pathMatcher(fuzzPaths)
		for i := range a {
			if a[i].gap != b[i].gap {
				t.Fatalf("bytes between tokens changed: %q -> %q", a[i].gap, b[i].gap)
			}
			_, named := match(a[i].ptr)
			if !named || !a[i].value || a[i].raw[0] != '"' {
				if a[i].raw != b[i].raw {
					t.Fatalf("token %q changed to %q outside a named field", a[i].raw, b[i].raw)
				}
				continue
			}
			if b[i].raw == "null" {
				continue
			}
			var s string
			if err := json.Unmarshal([]byte(b[i].raw), &s); err != nil || !strings.HasPrefix(s, "http://kb.test/huntress") {
				t.Fatalf("named field %s holds %s, not keybroker's URL (input %s)", a[i].ptr, b[i].raw, a[i].raw)
			}
		}
		if a[len(a)-1].gap != b[len(b)-1].gap {
			t.Fatal("trailing bytes changed")
		}
	})
}

type token struct {
	gap, raw string // the bytes before the token, the token's own
	ptr      jsontext.Pointer
	value    bool // an object member's value or an array element
}

// tokens splits a JSON document into its tokens and the bytes between
// them, a last entry holding the trailing bytes.
func tokens(t *testing.T, doc []byte) []token {
	t.Helper()
	dec := jsontext.NewDecoder(bytes.NewReader(doc), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	var out []token
	var prev int64
	for {
		depth := dec.StackDepth()
		kind, n := dec.StackIndex(depth)
		value := depth > 0 && (kind == '[' || n%2 == 1)
		before := dec.InputOffset()
		var raw []byte
		switch dec.PeekKind() {
		case 0:
			out = append(out, token{gap: string(doc[prev:])})
			return out
		case '"', '0', 'n', 't', 'f':
			v, err := dec.ReadValue()
			if err != nil {
				t.Fatal(err)
			}
			raw = v
		default:
			if _, err := dec.ReadToken(); err != nil {
				t.Fatal(err)
			}
			raw = doc[dec.InputOffset()-1 : dec.InputOffset()]
		}
		end := dec.InputOffset()
		start := end - int64(len(raw))
		_ = before
		out = append(out, token{gap: string(doc[prev:start]), raw: string(raw), ptr: dec.StackPointer(), value: value})
		prev = end
	}
}
