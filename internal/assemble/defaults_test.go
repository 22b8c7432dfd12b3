package assemble_test

import (
	"testing"

	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

// TestDefaults_AgreeAcrossTheBoundary: config applies every default to
// the YAML (internal/config/defaults.go, the one place to read them), and
// the runtime packages, which may not import config, apply the same ones
// to a zero value. Each pair must agree, or a value left unset would mean
// one thing in `keybroker validate` and another at run time.
func TestDefaults_AgreeAcrossTheBoundary(t *testing.T) {
	for _, d := range []struct {
		name            string
		config, runtime any
	}{
		{"upstream timeout", config.DefaultTimeout, proxy.DefaultTimeout},
		{"max_request_bytes", int64(config.DefaultMaxRequestBytes), int64(proxy.DefaultMaxRequestBytes)},
		{"server.max_header_count", config.DefaultMaxHeaderCount, proxy.DefaultMaxHeaderCount},
		{"server.read_body_timeout", config.DefaultReadBody, proxy.DefaultReadBodyTimeout},
		{"rate_limit margin", config.DefaultMargin, ratelimit.DefaultMargin},
		{"jwt leeway", config.DefaultJWTLeeway, jwtauth.DefaultLeeway},
		{"jwt max_lifetime", config.DefaultJWTMaxLifetime, jwtauth.DefaultMaxLifetime},
		{"egress phase timeouts", config.DefaultEgressPhase, egress.DefaultPhaseTimeout},
		{"egress.idle_timeout", config.DefaultEgressIdle, egress.DefaultIdleTimeout},
	} {
		if d.config != d.runtime {
			t.Errorf("%s: config's default %v, the runtime's %v", d.name, d.config, d.runtime)
		}
	}
}
