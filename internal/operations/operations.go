// Package operations is the vendors' own vocabulary for what a call does:
// a catalogue per upstream of named operations (a method and one or more
// path templates) with a risk tier (read, respond, admin), the matcher
// that finds a call's operation, and the loading of a catalogue from an
// OpenAPI or Swagger file. It is a leaf: callers' policy gets the name and
// tier as plain strings, and the OpenAPI library is read at load time
// only, never on a call.
package operations

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Tier is an operation's risk.
type Tier string

// Tiers, least risk first.
const (
	// Read changes nothing at the vendor.
	Read Tier = "read"
	// Respond acts on a threat: isolate a host, resolve an incident, scan.
	Respond Tier = "respond"
	// Admin changes the vendor account: agents, users, organizations,
	// stored credentials, rules.
	Admin Tier = "admin"
)

// Tiers are every tier, least risk first.
var Tiers = []Tier{Read, Respond, Admin}

// ParseTier reads a tier's name.
func ParseTier(s string) (Tier, bool) {
	t := Tier(s)
	return t, slices.Contains(Tiers, t)
}

// Operation is one documented action of a vendor API.
type Operation struct {
	// Name is snake_case and unique in its catalogue: keybroker's contract
	// from the day it is published (a vendor's rename keeps the old name
	// as an alias).
	Name   string
	Tier   Tier
	Method string
	// Paths are the operation's path templates, relative to the upstream's
	// URL: literal segments and {parameters}; one operation may have
	// several forms (Huntress: /v1/agents/{id} and
	// /v1/accounts/{account_id}/agents/{id}).
	Paths []string
	// Aliases are former names that still select it.
	Aliases []string
}

// Catalogue is an upstream's operations, compiled for matching.
type Catalogue struct {
	ops    []Operation
	byName map[string]int
	trees  map[string]*node // by method
	fold   bool
	base   string
	opts   Options
	// fallback: calls matching no named operation still get a tier (the
	// Infocyte preset: every other GET is read, every other write admin).
	readAll, writeAll int // index+1 into ops; 0: none
}

// node is a path segment in a method's tree: literal children, one
// parameter child, and the operation ending here (index+1; 0: none).
type node struct {
	lit   map[string]*node
	param *node
	op    int
}

// Options shape a catalogue.
type Options struct {
	// FoldCase matches literal segments case-insensitively (LoopBack's
	// routes: Infocyte).
	FoldCase bool
	// Base is the URL path the templates are relative to (Infocyte's
	// "/api"); Below moves them below an upstream URL's own path.
	Base string
	// ReadAll and WriteAll, when set, are the operations of a call that
	// matches none of the others: ReadAll for GET and HEAD, WriteAll for
	// any other method. Their Paths are not used.
	ReadAll, WriteAll *Operation
}

// New compiles ops into a catalogue. Names must be unique (aliases too);
// two operations may not share a method and path template.
func New(ops []Operation, o Options) (*Catalogue, error) {
	c := &Catalogue{byName: map[string]int{}, trees: map[string]*node{}, fold: o.FoldCase, base: strings.TrimSuffix(o.Base, "/"), opts: o}
	add := func(op Operation) (int, error) {
		if _, ok := ParseTier(string(op.Tier)); !ok {
			return 0, fmt.Errorf("operation %s: tier %q is not read, respond or admin", op.Name, op.Tier)
		}
		for _, n := range append([]string{op.Name}, op.Aliases...) {
			if n == "" {
				return 0, errors.New("an operation without a name")
			}
			if _, dup := c.byName[n]; dup {
				return 0, fmt.Errorf("two operations named %s", n)
			}
			c.byName[n] = len(c.ops)
		}
		c.ops = append(c.ops, op)
		return len(c.ops), nil
	}
	for _, op := range ops {
		op.Method = strings.ToUpper(op.Method)
		i, err := add(op)
		if err != nil {
			return nil, err
		}
		for _, p := range op.Paths {
			if err := c.insert(op.Method, p, i); err != nil {
				return nil, fmt.Errorf("operation %s: %w", op.Name, err)
			}
		}
	}
	var err error
	if o.ReadAll != nil {
		if c.readAll, err = add(*o.ReadAll); err != nil {
			return nil, err
		}
	}
	if o.WriteAll != nil {
		if c.writeAll, err = add(*o.WriteAll); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// insert adds the template p of method to its tree.
func (c *Catalogue) insert(method, p string, op int) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q does not start with /", p)
	}
	n := c.trees[method]
	if n == nil {
		n = &node{}
		c.trees[method] = n
	}
	for _, seg := range strings.Split(p[1:], "/") {
		switch {
		case seg == "":
			return fmt.Errorf("path %q has an empty segment", p)
		case strings.Contains(seg, "{"):
			if n.param == nil {
				n.param = &node{}
			}
			n = n.param
		default:
			if c.fold {
				seg = strings.ToLower(seg)
			}
			if n.lit == nil {
				n.lit = map[string]*node{}
			}
			next := n.lit[seg]
			if next == nil {
				next = &node{}
				n.lit[seg] = next
			}
			n = next
		}
	}
	if n.op != 0 && n.op != op {
		return fmt.Errorf("%s %s is also operation %s", method, p, c.ops[n.op-1].Name)
	}
	n.op = op
	return nil
}

// Match returns the operation a call is: its method (HEAD matches GET)
// and its clean path below the upstream URL. A literal segment beats a
// parameter; a parameter takes one non-empty segment, so a trailing "/"
// matches nothing. nil: an undocumented call. It allocates nothing.
func (c *Catalogue) Match(method, path string) *Operation {
	if c == nil {
		return nil
	}
	if method == "HEAD" {
		method = "GET"
	}
	if root := c.trees[method]; root != nil && strings.HasPrefix(path, "/") {
		if i := root.match(path, c.fold); i != 0 {
			return &c.ops[i-1]
		}
	}
	switch {
	case method == "GET" && c.readAll != 0:
		return &c.ops[c.readAll-1]
	case method != "GET" && method != "OPTIONS" && c.writeAll != 0:
		return &c.ops[c.writeAll-1]
	}
	return nil
}

// match walks path ("/a/b", or "" at its end) down from n, literals
// first, then the parameter.
func (n *node) match(path string, fold bool) int {
	if path == "" {
		return n.op
	}
	seg, rest := path[1:], ""
	if i := strings.IndexByte(seg, '/'); i >= 0 {
		seg, rest = seg[:i], seg[i:]
	}
	if n.lit != nil {
		var child *node
		if fold {
			var buf [64]byte
			if len(seg) <= len(buf) {
				for i := 0; i < len(seg); i++ {
					b := seg[i]
					if 'A' <= b && b <= 'Z' {
						b += 'a' - 'A'
					}
					buf[i] = b
				}
				child = n.lit[string(buf[:len(seg)])]
			}
		} else {
			child = n.lit[seg]
		}
		if child != nil {
			if op := child.match(rest, fold); op != 0 {
				return op
			}
		}
	}
	if n.param != nil && seg != "" {
		return n.param.match(rest, fold)
	}
	return 0
}

// Below returns the catalogue with its templates relative to urlPath, the
// path of an upstream's URL: a preset's catalogue for a URL with a path
// of its own (https://api.huntress.io/v1: /agents for /v1/agents). Every
// template must lie below urlPath.
func (c *Catalogue) Below(urlPath string) (*Catalogue, error) {
	urlPath = strings.TrimSuffix(urlPath, "/")
	if c == nil || urlPath == c.base {
		return c, nil
	}
	ops := make([]Operation, 0, len(c.ops))
	for _, op := range c.ops {
		if c.Fallback(op) {
			continue
		}
		op.Paths = slices.Clone(op.Paths)
		for i, p := range op.Paths {
			full := c.base + p
			rel, ok := strings.CutPrefix(full, urlPath)
			if !ok || !strings.HasPrefix(rel, "/") {
				return nil, fmt.Errorf("operation %s (%s) is not below the URL's path %s", op.Name, full, urlPath)
			}
			op.Paths[i] = rel
		}
		ops = append(ops, op)
	}
	o := c.opts
	o.Base = urlPath
	return New(ops, o)
}

// Lookup finds an operation by name or alias.
func (c *Catalogue) Lookup(name string) (Operation, bool) {
	if c == nil {
		return Operation{}, false
	}
	i, ok := c.byName[name]
	if !ok {
		return Operation{}, false
	}
	return c.ops[i], true
}

// Operations returns the catalogue's operations, in its order (the
// fallbacks last).
func (c *Catalogue) Operations() []Operation {
	if c == nil {
		return nil
	}
	return slices.Clone(c.ops)
}

// Names returns every name and alias.
func (c *Catalogue) Names() []string {
	if c == nil {
		return nil
	}
	names := make([]string, 0, len(c.byName))
	for n := range c.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Fallback reports whether op is a catch-all (ReadAll, WriteAll): it has
// no path templates of its own.
func (c *Catalogue) Fallback(op Operation) bool {
	return c != nil && ((c.readAll != 0 && c.ops[c.readAll-1].Name == op.Name) || (c.writeAll != 0 && c.ops[c.writeAll-1].Name == op.Name))
}

// Fill puts v in each {parameter} of a path template: a sample call of
// the operation, to ask a policy or a matcher about it.
func Fill(template, v string) string {
	segs := strings.Split(template, "/")
	for i, s := range segs {
		if strings.Contains(s, "{") {
			segs[i] = v
		}
	}
	return strings.Join(segs, "/")
}

// Name turns a spec's summary into an operation name: apostrophes
// dropped, each run of other characters that are not letters or digits
// replaced by "_", lower case ("Update a User's membership":
// update_a_users_membership).
func Name(summary string) string {
	var b strings.Builder
	gap := false
	for _, r := range summary {
		switch {
		case r == '\'' || r == '’':
		case ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			if gap && b.Len() > 0 {
				b.WriteByte('_')
			}
			gap = false
			b.WriteRune(r)
		case 'A' <= r && r <= 'Z':
			if gap && b.Len() > 0 {
				b.WriteByte('_')
			}
			gap = false
			b.WriteRune(r + 'a' - 'A')
		default:
			gap = true
		}
	}
	return b.String()
}
