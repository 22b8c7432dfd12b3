package secrets

import (
	"fmt"
	"time"
)

// Expiry is when a credential stops working, and how keybroker knows.
type Expiry struct {
	// At is the expiry; zero: unknown.
	At time.Time
	// From says where At came from: ExpiryField (a date stored with the
	// version), ExpiryMetadata (Vault KV v2 custom_metadata) or
	// ExpiryLifetime (an estimate: the upstream's credential lifetime
	// counted from when the version was written to Vault; the vendor may
	// have issued it earlier).
	From string
}

// Where an expiry came from (Expiry.From).
const (
	ExpiryField    = "expires_at"
	ExpiryMetadata = "custom_metadata"
	ExpiryLifetime = "lifetime (estimate)"
)

// ExpiresAtField is the field a stored secret may carry with its expiry
// (RFC 3339). It is taken out of the fields: never injected, never a
// credential field.
const ExpiresAtField = "expires_at"

// takeExpiresAt removes ExpiresAtField from fields and parses it.
func takeExpiresAt(fields map[string]Secret) (Expiry, error) {
	v, ok := fields[ExpiresAtField]
	if !ok {
		return Expiry{}, nil
	}
	delete(fields, ExpiresAtField)
	at, err := time.Parse(time.RFC3339, string(v))
	if err != nil {
		return Expiry{}, fmt.Errorf("field %q is not an RFC 3339 time (2027-01-31T00:00:00Z)", ExpiresAtField)
	}
	return Expiry{At: at, From: ExpiryField}, nil
}
