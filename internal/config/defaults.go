package config

import "time"

// Defaults, in one place. Where a runtime package applies the same
// default to a zero value (proxy, jwtauth, egress, ratelimit), assemble's
// TestDefaults_AgreeAcrossTheBoundary holds the two equal.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultAdminListen     = "127.0.0.1:9090"
	DefaultRefresh         = time.Minute
	DefaultMaxStale        = time.Hour
	MinRefresh             = time.Second
	DefaultTimeout         = 30 * time.Second
	DefaultMaxRequestBytes = 10 << 20
	DefaultMaxWait         = 10 * time.Second
	DefaultMargin          = 25 * time.Millisecond
	DefaultMaxHeaderBytes  = 64 << 10
	DefaultMaxHeaderCount  = 100
	DefaultReadHeader      = 10 * time.Second
	DefaultIdle            = 2 * time.Minute
	DefaultShutdown        = 30 * time.Second
	DefaultReadBody        = 60 * time.Second
	DefaultMaxConnections  = 4096
	MaxMaxHeaderBytes      = 1 << 20
	DefaultMinFreeBytes    = 128 << 20
	DefaultJWTFile         = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultRedisAddress    = "127.0.0.1:6379"
	// DefaultEgressPhase bounds each phase of reaching a vendor: dial,
	// proxy CONNECT, TLS handshake (egress.*_timeout).
	DefaultEgressPhase = 10 * time.Second
	// DefaultEgressIdle closes idle vendor connections (egress.idle_timeout).
	DefaultEgressIdle = 90 * time.Second
	// DefaultJWTLeeway and DefaultJWTMaxLifetime are callers[].jwt's.
	DefaultJWTLeeway      = 30 * time.Second
	DefaultJWTMaxLifetime = 24 * time.Hour
	// DefaultDropinTokenTTL is oauth.dropin_token_ttl's.
	DefaultDropinTokenTTL = time.Hour
)

func def(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

func defDur(dst *Duration, v time.Duration) {
	if *dst == 0 {
		*dst = Duration(v)
	}
}
