package config

import (
	"encoding/hex"
	"strings"
)

// Caller is one internal service.
type Caller struct {
	Name string `yaml:"name"`
	// KeySHA256 is the hex SHA-256 of the caller's key.
	KeySHA256  string     `yaml:"key_sha256"`
	ClientCert *CertMatch `yaml:"client_cert"`
	// JWT identifies the caller by a token its platform issued.
	JWT       *JWT        `yaml:"jwt"`
	Allow     []AllowRule `yaml:"allow"`
	RateLimit *RateLimit  `yaml:"rate_limit"`
}

// JWT identifies a caller by a signed token (Kubernetes service-account
// token, Vault identity token, any OIDC issuer's JWT): issuer, audience
// and subject must match, and each claim given (by JSON Pointer).
type JWT struct {
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	Subject  string `yaml:"subject"`
	// Claims must equal these values, keyed by JSON Pointer
	// ("/kubernetes.io/namespace": soar).
	Claims map[string]any `yaml:"claims"`
	// The issuer's keys: OIDC discovery at issuer by default; or this
	// JWKS URL; or this JWKS file (polled, and re-read on reload) where
	// the issuer cannot be reached. Settings of one issuer must agree
	// across its callers.
	JWKSURL  string `yaml:"jwks_url"`
	JWKSFile string `yaml:"jwks_file"`
	// CAFile verifies the issuer's HTTPS (beside the system roots);
	// TokenFile holds a bearer token sent with each key fetch (the
	// Kubernetes API server's discovery needs one).
	CAFile    string `yaml:"ca_file"`
	TokenFile string `yaml:"token_file"`
	// Leeway is the clock skew allowed on exp and nbf. Default 30s.
	Leeway *Duration `yaml:"leeway"`
	// MaxLifetime caps a token's exp − iat. Default 24h.
	MaxLifetime Duration `yaml:"max_lifetime"`
}

// KeyHash is KeySHA256 decoded; nil when the caller has no key.
func (c Caller) KeyHash() []byte {
	k, err := hex.DecodeString(strings.ToLower(c.KeySHA256))
	if err != nil || len(k) != 32 {
		return nil
	}
	return k
}

// CertMatch identifies a caller by its verified client certificate; any one
// field that matches is enough.
type CertMatch struct {
	CommonName string `yaml:"common_name"`
	DNS        string `yaml:"dns"`
	URI        string `yaml:"uri"`
}

// AllowRule lets a caller use an upstream with some methods on some paths.
// Empty Methods or Paths mean all.
type AllowRule struct {
	Upstream string   `yaml:"upstream"`
	Methods  []string `yaml:"methods"`
	Paths    []string `yaml:"paths"`
	// Operations and Tiers name the upstream's documented operations
	// (keybroker operations UPSTREAM) and their tiers (read, respond,
	// admin). A rule with either matches documented calls only; the
	// rule's fields must all hold.
	Operations []string `yaml:"operations"`
	Tiers      []string `yaml:"tiers"`
}
