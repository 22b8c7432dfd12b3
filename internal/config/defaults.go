package config

import "time"

// Defaults, in one place.
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
