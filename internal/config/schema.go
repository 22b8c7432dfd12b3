package config

import (
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
