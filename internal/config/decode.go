package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// LookupEnv reads one environment variable; os.LookupEnv in production.
type LookupEnv func(name string) (string, bool)

// decoder walks a YAML node tree alongside a Go value. It exists, instead of
// yaml.Decoder with KnownFields, so that every error names its field path
// (upstreams[1].auth.field) rather than a line of a re-encoded document, and
// so that ${VAR} is expanded inside each scalar after parsing: a value taken
// from the environment can never change the structure of the document.
type decoder struct {
	env LookupEnv
	// nodes counts nodes visited, aliases expanded each time they are
	// used, so that an alias bomb fails fast instead of running away.
	nodes int
}

// maxNodes bounds a configuration's expanded size; real ones use hundreds.
const maxNodes = 100_000

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// expand replaces ${VAR} and ${VAR:-default} in s. "$${" escapes a literal "${".
func (d *decoder) expand(path, s string) (string, error) {
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
		return "", fmt.Errorf("%s: environment variable %s is not set", path, missing)
	}
	return strings.ReplaceAll(out, escaped, "${"), nil
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	if d.nodes++; d.nodes > maxNodes {
		return fmt.Errorf("%s: the document expands to too many values (YAML aliases?)", orRoot(path))
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
			return fmt.Errorf("%s: expected a list", path)
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s: expected a mapping", path)
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if m.MapIndex(reflect.ValueOf(key)).IsValid() {
				return fmt.Errorf("%s: duplicate key", join(path, key))
			}
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
		return fmt.Errorf("%s: expected a mapping", orRoot(path))
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
		key := n.Content[i].Value
		idx, ok := fields[key]
		if !ok {
			return fmt.Errorf("%s: unknown field", join(path, key))
		}
		if seen[key] {
			return fmt.Errorf("%s: duplicate key", join(path, key))
		}
		seen[key] = true
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
		return fmt.Errorf("%s: expected a single value", path)
	}
	val, err := d.expand(path, n.Value)
	if err != nil {
		return err
	}
	node := *n
	if val != n.Value {
		node.Value = val
		if node.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			node.Tag = "" // let the expanded text resolve to a number or bool
		}
	}
	if err := node.Decode(v.Addr().Interface()); err != nil {
		return fmt.Errorf("%s: %s", path, expected(v))
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
