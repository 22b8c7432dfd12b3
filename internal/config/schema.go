package config

import (
	"encoding/hex"
	"net/url"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/keybroker/keybroker/internal/operations"
)

// Config is keybroker's whole configuration, as read from one YAML file.
// After Load it is complete: defaults and presets are applied and every
// value is valid, so other packages can use it without checking again.
type Config struct {
	// Listen is the caller-facing address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// TLS turns the caller listener into HTTPS; with ClientCAFile, client
	// certificates identify callers.
	TLS *TLS `yaml:"tls"`
	// Admin is the listener for /healthz, /readyz and /metrics.
	Admin Admin `yaml:"admin"`
	// Vault is how keybroker reaches and logs in to Vault.
	Vault Vault `yaml:"vault"`
	// Secrets tunes the credential cache.
	Secrets Secrets `yaml:"secrets"`
	// Upstreams are the vendor APIs callers may reach, by name.
	Upstreams []Upstream `yaml:"upstreams"`
	// AllowAnonymous lets callers without an identity in (they are still
	// audited). Default false; with no Callers it must be true to start.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// Callers are the known internal services.
	Callers []Caller `yaml:"callers"`
	// PolicyMode is "enforce" (default) or "report": in report mode a call the
	// policy would refuse is forwarded and its audit record says so.
	PolicyMode string `yaml:"policy_mode"`
	// RateLimit chooses the limiter backend shared by replicas.
	RateLimit RateLimitBackend `yaml:"ratelimit"`
	// Audit is where audit records go.
	Audit Audit `yaml:"audit"`
	// Log tunes the operational log.
	Log Log `yaml:"log"`
	// Server holds request limits and timeouts of the caller listener.
	Server Server `yaml:"server"`
	// Egress is how keybroker reaches the vendors.
	Egress Egress `yaml:"egress"`
	// OAuth configures keybroker's own token endpoint for drop-in OAuth
	// clients of oauth2_client_credentials upstreams.
	OAuth OAuth `yaml:"oauth"`

	// catalogues are the upstreams' operation catalogues, by upstream
	// name, built at validation (Catalogue); warnings are what validation
	// found worth saying but not wrong (Warnings).
	catalogues map[string]*operations.Catalogue
	warnings   []string
}

// Catalogue returns the operation catalogue of the upstream named name:
// its operations.openapi file's, else its preset's (huntress, infocyte);
// nil for none.
func (c *Config) Catalogue(name string) *operations.Catalogue { return c.catalogues[name] }

// Warnings are what validation found worth saying but not wrong (an allow
// rule that matches no documented operation); validate prints them, and
// start and reload log them.
func (c *Config) Warnings() []string { return c.warnings }

// OAuth configures the tokens keybroker issues to drop-in OAuth clients.
type OAuth struct {
	// TokenSigning is a credential source whose field key (at least 32
	// bytes) signs keybroker's tokens, so that every replica accepts the
	// others' tokens; rotated like any credential, the previous key stays
	// valid for one token lifetime. Unset: a random key made at start
	// (one replica only; tokens end with the process).
	TokenSigning *Credential `yaml:"token_signing"`
	// DropinTokenTTL is how long a keybroker token lives. Default 1h.
	DropinTokenTTL Duration `yaml:"dropin_token_ttl"`
}

// Egress is how keybroker reaches vendors: directly, or through an HTTP
// CONNECT proxy, trusting the system roots and optionally one more CA.
// HTTPS_PROXY and the like are never read: a credential does not follow an
// environment variable.
type Egress struct {
	// Proxy is the CONNECT proxy for https upstreams, http://host:port;
	// empty: direct. Plain-http (loopback) upstreams never use it.
	Proxy string `yaml:"proxy"`
	// ProxyCredential, when set, is a credential source whose fields
	// username and password are sent as Basic auth on CONNECT only.
	ProxyCredential *Credential `yaml:"proxy_credential"`
	// CAFile is a PEM bundle trusted in addition to the system roots (a
	// TLS-inspecting gateway's CA).
	CAFile string `yaml:"ca_file"`
	// DialTimeout bounds the TCP connect (to the vendor or the proxy).
	// Default 10s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// ConnectTimeout bounds the CONNECT exchange with the proxy. Default 10s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// TLSHandshakeTimeout bounds the TLS handshake. Default 10s.
	TLSHandshakeTimeout Duration `yaml:"tls_handshake_timeout"`
	// IdleTimeout closes idle vendor connections. Default 90s.
	IdleTimeout Duration `yaml:"idle_timeout"`
}

// EgressOverride is an upstream's own egress: a field set here (even to
// "") replaces the egress block's.
type EgressOverride struct {
	Proxy  *string `yaml:"proxy"`
	CAFile *string `yaml:"ca_file"`
}

// TLS configures HTTPS on the caller listener.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Admin configures the admin listener.
type Admin struct {
	// Listen defaults to 127.0.0.1:9090.
	Listen string `yaml:"listen"`
	// Pprof serves Go's profiles under /debug/pprof/ on the admin
	// listener. Default false: they show internals (never a secret value,
	// but stacks and heap shapes), so turn them on only to take a profile.
	Pprof bool `yaml:"pprof"`
}

// Vault configures the Vault client.
type Vault struct {
	// Address is Vault's URL; VAULT_ADDR is used when empty.
	Address   string    `yaml:"address"`
	Namespace string    `yaml:"namespace"`
	CAFile    string    `yaml:"ca_file"`
	Auth      VaultAuth `yaml:"auth"`
}

// VaultAuth configures how keybroker logs in to Vault.
type VaultAuth struct {
	// Method is token (default), approle or kubernetes.
	Method string `yaml:"method"`
	// TokenFile holds the token for method token; VAULT_TOKEN when empty.
	TokenFile string `yaml:"token_file"`
	// Mount is the auth mount path; default the method name.
	Mount        string `yaml:"mount"`
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"`
	Role         string `yaml:"role"`
	// JWTFile defaults to the pod's service-account token.
	JWTFile string `yaml:"jwt_file"`
}

// Secrets tunes the credential cache.
type Secrets struct {
	// RefreshInterval is how often a cached credential is re-read in the
	// background. Default 1m, at least 1s.
	RefreshInterval Duration `yaml:"refresh_interval"`
	// MaxStale is how long the last good copy is served while its source
	// fails. Default 1h.
	MaxStale Duration `yaml:"max_stale"`
	// ExpiryWarning is how long before a credential's expiry /readyz, the
	// log and the audit report it as expiring. Default 720h (30 days).
	ExpiryWarning Duration `yaml:"expiry_warning"`
}

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

// RateLimitBackend chooses where upstream quotas are kept.
type RateLimitBackend struct {
	// Backend is local (default) or redis.
	Backend string `yaml:"backend"`
	Redis   Redis  `yaml:"redis"`
	// Replicas divides an upstream quota when redis is unreachable and each
	// replica falls back to a local limiter. Default 1.
	Replicas int `yaml:"replicas"`
	// Margin is how long past Per after its reply a call still holds its
	// place in an upstream's window (clock and network slack). Default 25ms.
	Margin Duration `yaml:"margin"`
}

// Redis is the redis backend's connection.
type Redis struct {
	Address      string `yaml:"address"`
	PasswordFile string `yaml:"password_file"`
	TLS          bool   `yaml:"tls"`
}

// Audit configures the audit trail.
type Audit struct {
	// Path is the audit file; empty means stdout.
	Path string `yaml:"path"`
	// Replica names this keybroker among several (each writes its own
	// trail): checkpoints, the started event and an audit_file_opened
	// event at the head of every file carry it. Default: the host name.
	Replica string `yaml:"replica"`
	// Sync is when begin lines reach stable storage before their call
	// leaves: writes (default: calls other than GET, HEAD and OPTIONS),
	// all, or none; everything else is synced within a second (not under
	// none). A file trail only.
	Sync string `yaml:"sync"`
	// MinFreeBytes is the free space on the audit file's filesystem below
	// which /readyz, the log and keybroker_audit_disk_low warn, before the
	// disk is full. Default 128 MiB.
	MinFreeBytes int64 `yaml:"min_free_bytes"`
	// Signing, when set, writes signed checkpoints into the trail.
	Signing *Signing `yaml:"signing"`
}

// Signing configures signed audit checkpoints.
type Signing struct {
	// Credential holds the Ed25519 key: field private_key, base64 of the
	// 32-byte seed (keybroker audit keygen makes one). Read, refreshed and
	// rotated like a vendor credential. Or:
	Credential Credential `yaml:"credential"`
	// VaultTransit signs with an Ed25519 key of Vault's transit engine,
	// which never leaves Vault (preferred: nobody who reads a KV path or
	// keybroker's memory can sign). The Vault policy grants update on
	// <mount>/sign/<key> and read on <mount>/keys/<key>.
	VaultTransit *VaultTransit `yaml:"vault_transit"`
	// CheckpointInterval is how often a checkpoint is written when records
	// were added. Default 1m.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// CheckpointRecords writes one sooner, after this many records.
	// Default 10000.
	CheckpointRecords int `yaml:"checkpoint_records"`
}

// VaultTransit names a key of Vault's transit engine.
type VaultTransit struct {
	Mount string `yaml:"mount"`
	Key   string `yaml:"key"`
}

// Log configures the operational log.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
}

// Server holds limits of the caller listener.
type Server struct {
	// MaxHeaderBytes bounds request headers. Default 64 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxHeaderCount bounds the number of request header fields. Default 100.
	MaxHeaderCount int `yaml:"max_header_count"`
	// ReadHeaderTimeout bounds reading request headers. Default 10s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle keep-alive connections. Default 2m.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ShutdownTimeout is how long in-flight calls may finish on SIGTERM.
	// Default 30s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// ReadBodyTimeout is how long after a request starts its whole body
	// must have arrived; a body that has not is cut off (400). Default 60s.
	ReadBodyTimeout Duration `yaml:"read_body_timeout"`
	// MaxConnections caps open caller connections; more wait to be
	// accepted. Default 4096 (about 70 MiB of connection state).
	MaxConnections int `yaml:"max_connections"`
	// Unidentified limits refusals of requests without a named caller.
	Unidentified Unidentified `yaml:"unidentified"`
	// Refusals limits the recorded refusals of each known caller.
	Refusals Refusals `yaml:"refusals"`
}

// Refusals budgets the refusals of a caller with a valid identity (403,
// 404, 400, 413, 429): within PerCaller each has its own audit record;
// beyond it a refusal keeps its status but is only counted, in one
// refusal_summary event per caller per SummaryInterval. Calls the caller
// is allowed to make are always recorded.
type Refusals struct {
	// PerCaller is the budget of each caller (per replica). Default 60
	// per 1m, half of it at once.
	PerCaller *Quota `yaml:"per_caller"`
	// SummaryInterval is how often the counts are written. Default 1m.
	SummaryInterval Duration `yaml:"summary_interval"`
}

// Unidentified limits the requests keybroker refuses before it knows who
// sent them (no or an unknown key, a malformed request), so that nobody
// without a key can fill the audit disk. Within the limits each gets its
// own audit record; beyond them, a 429 and a count in one summary event per
// source per SummaryInterval.
type Unidentified struct {
	// PerSource is per remote address (IPv6: per /64). Default 60 per 1m.
	PerSource *Quota `yaml:"per_source"`
	// Total is over all sources. Default 600 per 1m.
	Total *Quota `yaml:"total"`
	// SummaryInterval is how often the counts are written. Default 1m.
	SummaryInterval Duration `yaml:"summary_interval"`
}

// Quota is Requests per Per; up to half of it may come at once.
type Quota struct {
	Requests int      `yaml:"requests"`
	Per      Duration `yaml:"per"`
}

// Duration is a time.Duration written as a Go duration string ("90s", "1m").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (interface{}, error) { return time.Duration(d).String(), nil }

// expected is the type-error message decode gives for a Duration field
// that does not parse (decode.go looks for this method).
func (d *Duration) expected() string { return "expected a duration such as 90s or 1m" }
