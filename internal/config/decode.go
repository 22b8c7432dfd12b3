package config

import (
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v4"
)

// LookupEnv reads one environment variable; os.LookupEnv in production.
type LookupEnv func(name string) (string, bool)

// decoder walks a YAML node tree alongside a Go value. It exists, instead of
// yaml.Decoder with KnownFields, so that every error names its field path
// (upstreams[1].auth.field) and its line, so that one run reports every
// unknown key and wrong type (a bad node is skipped, the walk goes on), and
// so that ${VAR} is expanded inside each scalar after parsing: a value taken
// from the environment can never change the structure of the document.
type decoder struct {
	env LookupEnv
	// nodes counts nodes visited, aliases expanded each time they are
	// used, so that an alias bomb fails fast instead of running away.
	nodes int
	// lines maps each field path present in the document to its line.
	lines map[string]int
	// errs are the decoding errors, in document order.
	errs []*FieldError
	// tainted are the paths whose decoded value is incomplete, so that
	// validation does not report what follows from a typo.
	tainted []taint
}

// taint marks a path whose value did not decode. missingOnly: an unknown
// key was found under it, so only fields absent from the document may be
// the victims (the key was probably one of them, misspelt).
type taint struct {
	path        string
	missingOnly bool
}

// FieldError is one configuration error: the field path, the line it is on
// (0 when unknown) and what is wrong. It never holds a value.
type FieldError struct {
	Path string
	Line int
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, orRoot(e.Path), e.Msg)
	}
	return fmt.Sprintf("%s: %s", orRoot(e.Path), e.Msg)
}

// errAbort stops the walk: the document is too large to go on.
type errAbort struct{ error }

func (d *decoder) fail(path string, line int, missingOnly bool, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
	d.tainted = append(d.tainted, taint{path: path, missingOnly: missingOnly})
}

// suppressed reports whether a validation error at path may be a
// consequence of a decoding error, and so is left out.
func (d *decoder) suppressed(path string) bool {
	for _, t := range d.tainted {
		if !under(path, t.path) {
			continue
		}
		if !t.missingOnly {
			return true
		}
		if path == t.path {
			return true
		}
		// The child of t.path on the way to path: absent from the document?
		rest := strings.TrimPrefix(path[len(t.path):], ".")
		seg := rest
		if i := strings.IndexAny(rest[1:], ".["); i >= 0 {
			seg = rest[:i+1]
		}
		child := t.path + seg
		if t.path != "" && !strings.HasPrefix(seg, "[") {
			child = t.path + "." + seg
		}
		if _, present := d.lines[child]; !present {
			return true
		}
	}
	return false
}

// lineOf is the line of path, or of its nearest ancestor in the document
// (a missing field is reported at its parent's line).
func (d *decoder) lineOf(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return d.lines[""]
		}
		path = path[:i]
	}
}

// under reports whether path is p or lies below it.
func under(path, p string) bool {
	if p == "" || path == p {
		return true
	}
	return strings.HasPrefix(path, p) && (path[len(p)] == '.' || path[len(p)] == '[')
}

// maxNodes bounds a configuration's expanded size; real ones use hundreds.
const maxNodes = 100_000

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// expand replaces ${VAR} and ${VAR:-default} in s. "$${" escapes a literal "${".
func (d *decoder) expand(s string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	const escaped = "\x00kb-dollar\x00"
	s = strings.ReplaceAll(s, "$${", escaped)
	var missing string
	out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := envRef.FindStringSubmatch(ref)
		if v, ok := d.env(m[1]); ok && v != "" {
			return v
		}
		if m[2] != "" {
			return m[3]
		}
		if missing == "" {
			missing = m[1]
		}
		return ""
	})
	if missing != "" {
		return "", fmt.Errorf("environment variable %s is not set", missing)
	}
	return strings.ReplaceAll(out, escaped, "${"), nil
}

// decode fills v from n. It records errors and goes on; it returns an
// error only when the walk must stop (errAbort).
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	if d.nodes++; d.nodes > maxNodes {
		return errAbort{fmt.Errorf("%s: the document expands to too many values (YAML aliases?)", orRoot(path))}
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil // absent and null both mean "use the default"
	}

	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), path)
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		return d.leaf(n, v, path)
	}

	switch v.Kind() {
	case reflect.Struct:
		return d.structure(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(path, n.Line, false, "expected a list")
			return nil
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			if err := d.decode(item, s.Index(i), p); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(path, n.Line, false, "expected a mapping")
			return nil
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, kl := n.Content[i].Value, n.Content[i].Line
			if m.MapIndex(reflect.ValueOf(key)).IsValid() {
				d.fail(join(path, key), kl, false, "duplicate key")
				continue
			}
			d.lines[join(path, key)] = kl
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := d.decode(n.Content[i+1], elem, join(path, key)); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(key), elem)
		}
		v.Set(m)
		return nil
	default:
		return d.leaf(n, v, path)
	}
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, false, "expected a mapping")
		return nil
	}
	fields := map[string]int{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			fields[name] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, kl := n.Content[i].Value, n.Content[i].Line
		idx, ok := fields[key]
		if !ok {
			d.fail(join(path, key), kl, false, "unknown field%s", suggest(key, fields))
			d.tainted = append(d.tainted, taint{path: path, missingOnly: true})
			continue
		}
		if seen[key] {
			d.fail(join(path, key), kl, false, "duplicate key")
			continue
		}
		seen[key] = true
		d.lines[join(path, key)] = kl
		if err := d.decode(n.Content[i+1], v.Field(idx), join(path, key)); err != nil {
			return err
		}
	}
	return nil
}

// leaf decodes a scalar after expanding ${VAR}. Its errors name the expected
// type, never the value: a value may have come from a secret-bearing variable.
func (d *decoder) leaf(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n.Line, false, "expected a single value")
		return nil
	}
	val, err := d.expand(n.Value)
	if err != nil {
		d.fail(path, n.Line, false, "%v", err)
		if v.Kind() == reflect.String {
			// The field is set, to its unexpanded text: the one error is the
			// variable, not a second "set one of ..." about its parent.
			// Checks of the field itself are suppressed (tainted).
			v.SetString(n.Value)
		}
		return nil
	}
	node := *n
	if val != n.Value {
		node.Value = val
		if node.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			node.Tag = "" // let the expanded text resolve to a number or bool
		}
	}
	if err := node.Decode(v.Addr().Interface()); err != nil {
		d.fail(path, n.Line, false, "%s", expected(v))
	}
	return nil
}

func expected(v reflect.Value) string {
	if e, ok := v.Addr().Interface().(interface{ expected() string }); ok {
		return e.expected()
	}
	switch v.Kind() {
	case reflect.Bool:
		return "expected true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "expected a whole number"
	case reflect.String:
		return "expected a string"
	}
	return "expected a " + v.Type().String()
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

// quote is strconv.Quote, for names (never values) in messages.
func quote(s string) string { return strconv.Quote(s) }

// suggest names the known field closest to an unknown key ("listn" →
// listen), when one is close.
func suggest(key string, fields map[string]int) string {
	return didYouMean(key, slices.Collect(maps.Keys(fields)))
}

// didYouMean is " (did you mean X?)" for the known name closest to name
// (Damerau distance 2 at most: "aduit" → audit, "huntres" → huntress),
// the first in order on a tie; "" when none is that close. Keys, presets,
// upstream names in allow rules: one helper for every name a user types.
func didYouMean(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(name, k); d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if best == "" || best == name {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// distance is the Damerau–Levenshtein distance (optimal string alignment)
// between two short names: a swap of two neighbours counts one.
func distance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
