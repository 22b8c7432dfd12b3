package secrets

// Credential lifecycle event types (Event.Type).
const (
	EventLoaded        = "loaded"
	EventRotated       = "rotated"
	EventRefreshFailed = "refresh_failed"
	EventServingStale  = "serving_stale"
	EventRecovered     = "recovered"
	EventExpiring      = "expiring"
	EventExpired       = "expired"
	EventRejected      = "rejected"
	EventUnproven      = "unproven"
)

// AuditName is the event's name in the audit trail: credential_<type>.
// (The Vault client's own events, vault_*, are named by their type.)
func (e Event) AuditName() string { return "credential_" + e.Type }

// Event is a credential lifecycle event, for the audit stream and metrics.
// It carries versions and error text, never a value.
type Event struct {
	Type       string // one of the Event* constants, or vault_login, vault_renewed, vault_login_failed
	Upstream   string
	Source     string
	Ref        string
	Version    int
	OldVersion int
	Error      string
	// Expiry is set on expiring and expired.
	Expiry Expiry
	// Validated is set on rotated when the upstream has a probe: whether
	// the vendor accepted the new version before it was served.
	Validated *bool
	// Status is the vendor's answer to the probe, on rejected and
	// unproven (0: none).
	Status int
}
