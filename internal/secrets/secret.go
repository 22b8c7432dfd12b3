// Package secrets owns vendor credentials: where they are read from (the
// Source implementations: Vault KV, a file, the environment), the in-memory
// Cache the proxy reads on every call, and its background refresh. It does
// not know how a credential is injected into a request; that is the proxy's.
//
// No value read here is ever formatted into an error, a log entry or an
// event: errors name the source, the path and the field, never the value.
package secrets

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Secret holds a credential value. It prints as REDACTED in every format, so
// a Secret that reaches a log line or an error by mistake leaks nothing.
type Secret string

// String returns REDACTED.
func (Secret) String() string { return "REDACTED" }

// GoString returns REDACTED.
func (Secret) GoString() string { return "REDACTED" }

// Format prints REDACTED for every verb, %x and %q included.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("REDACTED")) }

// MarshalJSON writes "REDACTED".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"REDACTED"`), nil }

// MarshalText writes REDACTED (zap, YAML and encoding/* use it).
func (Secret) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }

// LogValue hides the value from log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Reveal returns the value. It is the one way out, used only to inject it.
func (s Secret) Reveal() string { return string(s) }

// Sentinel errors the proxy maps to replies.
var (
	// ErrUnavailable: no usable credential (never loaded, or its source has
	// failed for longer than max_stale). → 503 credential_unavailable.
	ErrUnavailable = errors.New("credential unavailable")
	// ErrInvalid: the stored secret lacks a required field, or a field is
	// empty or padded with white space.
	ErrInvalid = errors.New("credential invalid")
	// ErrUnknown: no credential is configured under that name.
	ErrUnknown = errors.New("no such credential")
)

// Credential is one upstream's credential as last read from its source.
type Credential struct {
	// Fields are the secret's values by field name.
	Fields map[string]Secret
	// Version is the source's version (Vault KV v2 metadata) or, for
	// sources without versions, a counter the cache raises on every change.
	Version int
	// Source is "vault", "file" or "env"; Ref says where in it
	// ("secret/vendors/huntress"). Neither is secret.
	Source string
	Ref    string
	// ReadAt is when the source last answered with this credential.
	ReadAt time.Time
	// Expiry is when it stops working, where known.
	Expiry Expiry
	// Token is a short-lived value minted from this version and injected
	// in its place (an OAuth upstream's vendor token); empty for a
	// credential injected as stored. It changes within a version.
	Token Secret
}

// Field returns a field's value or ErrInvalid naming the field.
func (c Credential) Field(name string) (Secret, error) {
	v, ok := c.Fields[name]
	if !ok {
		return "", fmt.Errorf("%s %s: field %q missing: %w", c.Source, c.Ref, name, ErrInvalid)
	}
	return v, nil
}

// ErrMissing: a required field is not in the stored secret (an ErrInvalid).
var ErrMissing = fmt.Errorf("missing: %w", ErrInvalid)

// ErrPlaceholder: a required field still holds a placeholder that shipped
// examples and `make run` write (an ErrInvalid). It is never sent to a vendor.
var ErrPlaceholder = fmt.Errorf("placeholder credential: %w", ErrInvalid)

// PlaceholderPrefix starts every placeholder value keybroker's examples
// write ("REPLACE_WITH_HUNTRESS_API_KEY").
const PlaceholderPrefix = "REPLACE_WITH_"

// CheckField checks one required field: present, non-empty and without
// surrounding white space (a pasted newline is the classic cause of a
// vendor 401). The error names the field, never the value.
func CheckField(fields map[string]Secret, name string) error {
	v, ok := fields[name]
	switch {
	case !ok:
		return fmt.Errorf("field %q %w", name, ErrMissing)
	case v == "":
		return fmt.Errorf("field %q is empty: %w", name, ErrInvalid)
	case strings.TrimSpace(string(v)) != string(v):
		return fmt.Errorf("field %q has leading or trailing white space: %w", name, ErrInvalid)
	case strings.HasPrefix(string(v), PlaceholderPrefix):
		return fmt.Errorf("field %q holds a placeholder (%s…), not a real value: %w", name, PlaceholderPrefix, ErrPlaceholder)
	}
	return nil
}

// checkFields verifies every required field (CheckField), naming the
// source.
func checkFields(kind, ref string, fields map[string]Secret, required []string) error {
	for _, name := range required {
		if err := CheckField(fields, name); err != nil {
			return fmt.Errorf("%s %s: %w", kind, ref, err)
		}
	}
	return nil
}
