package secrets

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/vaulttest"
)

// TestExpiry_FromVaultAndFiles, against the real Vault test server: an
// Infocyte token's expiry is estimated from the version's created_time
// and the preset's year (keybroker's clock is moved, not Vault's): 340
// days on it warns, 366 days on it is expired. custom_metadata.expires_at
// overrides the estimate, expires_at stored with the version overrides
// both, and a file's expires_at works the same way. expires_at is never a
// credential field. Each state gives one event.
func TestExpiry_FromVaultAndFiles(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Put("vendors/infocyte", map[string]any{"token": "tok-one"})
	vs.Put("vendors/infocyte-md", map[string]any{"token": "tok-two"})
	date := time.Now().Add(100 * 24 * time.Hour).UTC().Truncate(time.Second)
	vs.Write("secret/metadata/vendors/infocyte-md", map[string]any{"custom_metadata": map[string]any{"expires_at": date.Format(time.RFC3339)}})
	stored := time.Now().Add(10 * 24 * time.Hour).UTC().Truncate(time.Second)
	vs.Put("vendors/infocyte-stored", map[string]any{"token": "tok-three", "expires_at": stored.Format(time.RFC3339)})
	file := filepath.Join(t.TempDir(), "other.json")
	if err := os.WriteFile(file, []byte(`{"key":"k","expires_at":"`+stored.Format(time.RFC3339)+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	v := tokenVault(t, vs.Addr, vs.RootToken)
	year := 365 * 24 * time.Hour
	var mu sync.Mutex
	var clock time.Time
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	set := func(d time.Duration) { mu.Lock(); clock = time.Now().Add(d); mu.Unlock() }
	set(0)
	var events []Event
	c, err := NewCache([]Spec{
		{Name: "infocyte", Source: v.Source("secret", "vendors/infocyte", 2), Required: []string{"token"}, Lifetime: year},
		{Name: "metadata", Source: v.Source("secret", "vendors/infocyte-md", 2), Required: []string{"token"}, Lifetime: year},
		{Name: "stored", Source: v.Source("secret", "vendors/infocyte-stored", 2), Required: []string{"token"}, Lifetime: year},
		{Name: "file", Source: NewFileSource(file), Required: []string{"key"}},
	}, Options{Now: now, MaxStale: 10000 * time.Hour, RefreshInterval: 10000 * time.Hour,
		OnEvent: func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []string{"infocyte", "metadata", "stored", "file"} {
		cred, err := c.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cred.Fields[ExpiresAtField]; ok {
			t.Errorf("%s: expires_at is a credential field", n)
		}
	}
	byName := func() map[string]Status {
		m := map[string]Status{}
		for _, s := range c.Status() {
			m[s.Name] = s
		}
		return m
	}
	st := byName()
	if x := st["infocyte"].Expiry; x.From != ExpiryLifetime || x.At.Sub(time.Now().Add(year)).Abs() > time.Minute {
		t.Errorf("infocyte: expiry %+v, want a year from the version's creation (estimate)", x)
	}
	if x := st["metadata"].Expiry; x.From != ExpiryMetadata || !x.At.Equal(date) {
		t.Errorf("metadata: expiry %+v, want custom_metadata's %s", x, date)
	}
	if x := st["stored"].Expiry; x.From != ExpiryField || !x.At.Equal(stored) {
		t.Errorf("stored: expiry %+v, want the version's own %s", x, stored)
	}
	if x := st["file"].Expiry; x.From != ExpiryField || !x.At.Equal(stored) || !st["file"].Expiring {
		t.Errorf("file: expiry %+v expiring %v", x, st["file"].Expiring)
	}
	if st["infocyte"].Expiring || st["infocyte"].CredentialExpired {
		t.Errorf("a fresh token is reported expiring or expired")
	}

	count := func(typ, name string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, e := range events {
			if e.Type == typ && e.Upstream == name {
				n++
			}
		}
		return n
	}
	check := func() {
		for _, e := range c.entries {
			c.checkExpiry(e)
		}
	}
	set(340 * 24 * time.Hour)
	check()
	check() // at most once a day
	if s := byName()["infocyte"]; !s.Expiring || s.CredentialExpired || count(EventExpiring, "infocyte") != 1 {
		t.Errorf("340 days on: expiring %v expired %v, %d expiring events", s.Expiring, s.CredentialExpired, count(EventExpiring, "infocyte"))
	}
	set(342 * 24 * time.Hour)
	check()
	if n := count(EventExpiring, "infocyte"); n != 2 {
		t.Errorf("two days later: %d expiring events, want 2", n)
	}
	set(366 * 24 * time.Hour)
	check()
	check()
	if s := byName()["infocyte"]; !s.CredentialExpired || count(EventExpired, "infocyte") != 1 {
		t.Errorf("366 days on: expired %v, %d expired events", s.CredentialExpired, count(EventExpired, "infocyte"))
	}
	if s := byName()["metadata"]; !s.CredentialExpired {
		t.Error("custom_metadata's date (100 days) passed at 366 days, but not reported")
	}
}

// TestExpiry_AStaleMetadataDateIsNotUsed: custom_metadata written for
// version 1 (expires_at_version) is ignored once version 2 is the one in
// use, and the estimate takes over. (Without expires_at_version a stale
// date cannot be told: Vault moves the metadata's updated_time on every
// data write.)
func TestExpiry_AStaleMetadataDateIsNotUsed(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Put("vendors/infocyte", map[string]any{"token": "old"})
	vs.Write("secret/metadata/vendors/infocyte", map[string]any{"custom_metadata": map[string]any{
		"expires_at": "2027-01-01T00:00:00Z", "expires_at_version": "1"}})
	v := tokenVault(t, vs.Addr, vs.RootToken)
	src := v.Source("secret", "vendors/infocyte", 2)
	if r, err := src.Read(context.Background()); err != nil || r.Expiry.From != ExpiryMetadata {
		t.Fatalf("version 1: expiry %+v (%v), want custom_metadata's", r.Expiry, err)
	}
	vs.Put("vendors/infocyte", map[string]any{"token": "new"})
	r, err := src.Read(context.Background())
	if err != nil || r.Version != 2 || r.Expiry.From == ExpiryMetadata || r.Created.IsZero() {
		t.Errorf("version %d: expiry %+v created %v (%v): the metadata was written for version 1", r.Version, r.Expiry, r.Created, err)
	}
}
