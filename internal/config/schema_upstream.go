package config

import (
	"net/url"
	"strings"
	"time"
)

// Upstream is one vendor API.
type Upstream struct {
	// Name is also the path prefix: /NAME/....
	Name string `yaml:"name"`
	// Preset fills URL, Auth, RateLimit and vendor quirks; fields set here win.
	Preset string `yaml:"preset"`
	// URL is the vendor's base URL; its path is kept as a prefix.
	URL string `yaml:"url"`
	// Auth says how the credential is injected.
	Auth Auth `yaml:"auth"`
	// Credential says where the credential comes from.
	Credential Credential `yaml:"credential"`
	// RateLimit is the vendor's quota for this upstream; nil means none.
	RateLimit *RateLimit `yaml:"rate_limit"`
	// Timeout bounds the wait for the vendor's response headers. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// MaxRequestBytes bounds a request body. Default 10 MiB.
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
	// RewriteLinks names fields of JSON replies that hold links to the
	// vendor ("pagination.next_page_url": dotted object keys; arrays on the
	// way are walked). A link on the upstream's own origin is rewritten to
	// keybroker's URL, so a client that follows it stays behind keybroker.
	// The huntress preset names pagination.next_page_url.
	RewriteLinks []string `yaml:"rewrite_links"`
	// Egress overrides the egress block's proxy or ca_file for this upstream.
	Egress *EgressOverride `yaml:"egress"`
	// Probe is a cheap read-only call that proves a rotated credential
	// before it is served (the huntress preset: GET /v1/account). None by
	// default for other upstreams.
	Probe *Probe `yaml:"probe"`
	// Operations names the vendor's operations and their risk tiers from
	// its API spec, for policy, audit and report. The huntress and
	// infocyte presets have theirs; this replaces a preset's.
	Operations *Operations `yaml:"operations"`
}

// Operations reads an upstream's operation catalogue from a Swagger 2.0 or
// OpenAPI 3.x file (JSON or YAML).
type Operations struct {
	// OpenAPI is the spec file. Paths are taken below the upstream URL's
	// path (the spec's basePath or first server must agree with it).
	OpenAPI string `yaml:"openapi"`
	// Tiers set operations' tiers by name (read, respond, admin). Default:
	// GET and HEAD read, every other method admin.
	Tiers map[string]string `yaml:"tiers"`
}

// Probe is the request that proves a credential: method and path below
// the upstream's URL.
type Probe struct {
	Method string `yaml:"method"`
	Path   string `yaml:"path"`
}

// EgressProxy is the CONNECT proxy this upstream goes through ("": direct;
// always direct for plain http).
func (u Upstream) EgressProxy(e Egress) string {
	if strings.HasPrefix(u.URL, "http://") {
		return ""
	}
	if u.Egress != nil && u.Egress.Proxy != nil {
		return *u.Egress.Proxy
	}
	return e.Proxy
}

// EgressCAFile is the extra CA this upstream trusts ("": system roots only).
func (u Upstream) EgressCAFile(e Egress) string {
	if u.Egress != nil && u.Egress.CAFile != nil {
		return *u.Egress.CAFile
	}
	return e.CAFile
}

// TargetURL is URL parsed, without a trailing slash. Call it on a
// validated configuration only.
func (u Upstream) TargetURL() *url.URL {
	t, err := url.Parse(u.URL)
	if err != nil {
		return nil
	}
	t.Path = strings.TrimSuffix(t.Path, "/")
	t.RawPath = ""
	return t
}

// DropinParams are query parameters, beyond the auth's own slot, that may
// carry a caller's key and never reach the vendor (the infocyte preset:
// access_token).
func (u Upstream) DropinParams() []string { return presets[u.Preset].dropinQuery }

// DropinHeaders are caller headers, beyond the auth's own slot, that the
// vendor would read as credentials (the infocyte preset: X-Access-Token).
func (u Upstream) DropinHeaders() []string { return presets[u.Preset].stripHeaders }

// DefaultHeaders are request headers the preset sends when the caller
// sent none of that name (huntress-sat: the JSON:API media type).
func (u Upstream) DefaultHeaders() map[string]string { return presets[u.Preset].headers }

// VendorPause is how long to pause after a vendor 429 that carries no
// Retry-After: the preset's, else 0 (the quota's window).
func (u Upstream) VendorPause() time.Duration { return presets[u.Preset].vendorRetryAfter }

// Auth is how the vendor credential is injected.
type Auth struct {
	// Type is basic, header, query or oauth2_client_credentials.
	Type string `yaml:"type"`
	// UsernameField and PasswordField name the secret's fields (basic).
	UsernameField string `yaml:"username_field"`
	PasswordField string `yaml:"password_field"`
	// Header is the header name (header), Prefix goes before the value
	// (for example "Bearer "), Field names the secret's field (header, query).
	Header string `yaml:"header"`
	Prefix string `yaml:"prefix"`
	Field  string `yaml:"field"`
	// Param is the query parameter (query).
	Param string `yaml:"param"`
	// TokenURL is the vendor's token endpoint (oauth2_client_credentials);
	// the credential's fields client_id and client_secret are sent to it.
	TokenURL string `yaml:"token_url"`
	// Scope is sent with each token request (space-separated).
	Scope string `yaml:"scope"`
	// ClientAuth is how the client credentials go to the token endpoint:
	// basic (HTTP Basic, the default) or body (form fields).
	ClientAuth string `yaml:"client_auth"`
	// DropinTokenPath is where, below /NAME, keybroker answers drop-in
	// OAuth clients' token requests. Default: token_url's path when it has
	// the upstream URL's origin, else /oauth/token.
	DropinTokenPath string `yaml:"dropin_token_path"`
}

// Credential names exactly one source.
type Credential struct {
	Vault *VaultRef `yaml:"vault"`
	File  *FileRef  `yaml:"file"`
	Env   *EnvRef   `yaml:"env"`
	// Lifetime is how long the vendor's credential lives: a Vault KV v2
	// version without a stored expiry is taken to expire this long after
	// it was written (an estimate). Default: the preset's (Infocyte: 365
	// days), else none.
	Lifetime Duration `yaml:"lifetime"`
}

// VaultRef is a secret in a Vault KV mount.
type VaultRef struct {
	Mount string `yaml:"mount"`
	Path  string `yaml:"path"`
	// KVVersion is 1 or 2 (default).
	KVVersion int `yaml:"kv_version"`
}

// FileRef is a JSON or YAML file holding a flat object of fields.
type FileRef struct {
	Path string `yaml:"path"`
}

// EnvRef takes the credential from the environment at start: Key holds
// either a JSON object of fields or the single field's value; Fields maps
// field names to variables.
type EnvRef struct {
	Key    string            `yaml:"key"`
	Fields map[string]string `yaml:"fields"`
}

// RateLimit is a quota as vendors state it: Requests per Per.
type RateLimit struct {
	Requests int      `yaml:"requests"`
	Per      Duration `yaml:"per"`
	// Burst is how many calls may go at once. An upstream's quota is a
	// sliding window: Burst defaults to Requests (the whole quota at
	// once); below it, calls are smoothed to Requests/Per after the first
	// Burst. A caller's limit is a token bucket: Burst defaults to 1 and
	// stays below Requests.
	Burst int `yaml:"burst"`
	// MaxWait is how long a call may wait for its turn before 429; 0s
	// refuses at once. Default 10s.
	MaxWait *Duration `yaml:"max_wait"`
	// Shares split an upstream's quota between callers, by caller name
	// (upstreams only): each caller's reserve, max and weight.
	Shares map[string]Share `yaml:"shares"`
}

// Share is one caller's part of an upstream quota.
type Share struct {
	// Reserve slots of every window are the caller's alone (unused, they
	// stay idle). Default 0.
	Reserve int `yaml:"reserve"`
	// Max caps the slots the caller holds in any window. Default: none.
	Max int `yaml:"max"`
	// Weight: freed shared slots go to waiting callers in proportion to
	// their weights. Default 1.
	Weight float64 `yaml:"weight"`
}
