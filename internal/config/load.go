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

	"gopkg.in/yaml.v3"
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
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config: the file is empty")
		}
		return nil, fmt.Errorf("config: not valid YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: more than one YAML document")
	}

	cfg := &Config{}
	d := &decoder{env: env}
	if err := d.decode(&root, reflect.ValueOf(cfg).Elem(), ""); err != nil {
		return nil, err
	}
	if err := cfg.complete(env); err != nil {
		return nil, err
	}
	return cfg, nil
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
	if s := c.Audit.Signing; s != nil && s.Credential.Vault != nil {
		return true
	}
	return c.Egress.ProxyCredential != nil && c.Egress.ProxyCredential.Vault != nil
}
