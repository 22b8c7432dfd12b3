// Package config reads keybroker's YAML configuration: the schema, the
// defaults, the vendor presets and the validation. Every error names the
// field path it is about (upstreams[1].auth.field: required for type header)
// and never the value. It does not open connections or read secrets: other
// packages receive a Config that is already complete and valid.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"

	"go.yaml.in/yaml/v4"
)

// Load reads, expands, defaults and validates the configuration file at path.
// env resolves ${VAR} references and VAULT_ADDR; pass os.LookupEnv.
func Load(path string, env LookupEnv) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, env)
}

// Parse is Load for a document already in memory.
func Parse(data []byte, env LookupEnv) (*Config, error) {
	cfg, _, err := ParseWith(data, Options{Env: env})
	return cfg, err
}

// Options tune a parse for where it runs.
type Options struct {
	// Env resolves ${VAR} references and VAULT_ADDR (nil: none is set).
	Env LookupEnv
	// SkipFiles checks syntax and semantics but opens none of the files
	// the configuration names (TLS, CAs, JWKS and token files, password
	// files): for a workstation checking a pod's configuration.
	SkipFiles bool
}

// LoadWith is Load with options; unchecked names the files SkipFiles
// left unopened, by field path.
func LoadWith(path string, o Options) (cfg *Config, unchecked []string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	return ParseWith(data, o)
}

// ParseWith is LoadWith for a document already in memory.
func ParseWith(data []byte, o Options) (*Config, []string, error) {
	cfg, e, err := parse(data, o)
	if e == nil {
		return cfg, nil, err
	}
	return cfg, e.unchecked, err
}

func parse(data []byte, o Options) (*Config, *errs, error) {
	env := o.Env
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, errors.New("config: the file is empty")
		}
		return nil, nil, syntaxError(err, data)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("config: more than one YAML document")
	}

	cfg := &Config{}
	d := &decoder{env: env, lines: map[string]int{"": 1}}
	if err := d.decode(&root, reflect.ValueOf(cfg).Elem(), ""); err != nil {
		return nil, nil, err
	}
	all := d.errs
	checked := cfg.complete(env, o.SkipFiles)
	for _, e := range checked.list {
		if d.suppressed(e.Path) {
			continue
		}
		e.Line = d.lineOf(e.Path)
		all = append(all, e)
	}
	if len(all) == 0 {
		return cfg, checked, nil
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Line < all[j].Line })
	joined := make([]error, len(all))
	for i, e := range all {
		joined[i] = e
	}
	return nil, checked, errors.Join(joined...)
}

// syntaxError says where YAML's parser found the problem and, when it
// knows, where the construct it was reading began: an unclosed [ or quote
// is found lines later, at the next token that cannot belong to it.
func syntaxError(err error, data []byte) error {
	var le *yaml.LoadError
	if !errors.As(err, &le) || le.Mark.Line == 0 {
		return fmt.Errorf("config: not valid YAML: %w", err)
	}
	what := le.Message
	if tabIndented(data, le.Mark.Line) {
		what = "a tab in the indentation: YAML indents with spaces only (" + what + ")"
	}
	msg := fmt.Sprintf("config: not valid YAML: line %d, column %d: %s", le.Mark.Line, le.Mark.Column, what)
	if le.ContextMsg != "" && le.ContextMark.Line > 0 && le.ContextMark != le.Mark {
		msg += fmt.Sprintf(" (%s that starts at line %d, column %d)", le.ContextMsg, le.ContextMark.Line, le.ContextMark.Column)
	}
	return errors.New(msg)
}

// tabIndented reports whether line (1-based) of data has a tab in its
// indentation: YAML's own message rarely says so.
func tabIndented(data []byte, line int) bool {
	lines := bytes.Split(data, []byte("\n"))
	if line < 1 || line > len(lines) {
		return false
	}
	l := lines[line-1]
	indent := l[:len(l)-len(bytes.TrimLeft(l, " \t"))]
	return bytes.IndexByte(indent, '\t') >= 0
}

// Upstream returns the upstream named name, or nil.
func (c *Config) Upstream(name string) *Upstream {
	for i := range c.Upstreams {
		if c.Upstreams[i].Name == name {
			return &c.Upstreams[i]
		}
	}
	return nil
}

// UsesVault reports whether any upstream reads its credential from Vault.
func (c *Config) UsesVault() bool {
	for _, u := range c.Upstreams {
		if u.Credential.Vault != nil {
			return true
		}
	}
	if s := c.Audit.Signing; s != nil && (s.Credential.Vault != nil || s.VaultTransit != nil) {
		return true
	}
	if s := c.OAuth.TokenSigning; s != nil && s.Vault != nil {
		return true
	}
	return c.Egress.ProxyCredential != nil && c.Egress.ProxyCredential.Vault != nil
}
