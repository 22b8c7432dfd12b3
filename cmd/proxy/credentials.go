package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// credentialRow is one credential as the admin listener's /credentials
// reports it: where it lives, the version in use, its expiry and the
// vendor's last refusal. Never a value.
type credentialRow struct {
	Upstream   string     `json:"upstream"`
	Source     string     `json:"source"`
	Ref        string     `json:"ref"`
	Loaded     bool       `json:"loaded"`
	Version    int        `json:"version,omitempty"`
	ReadAt     *time.Time `json:"read_at,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	ExpiryFrom string     `json:"expiry_from,omitempty"`
	// State is ok, expiring, expired (the credential), stale (its source
	// fails) or not loaded.
	State string `json:"state"`
	// Vendor401 is the last time the vendor refused a credential, and which
	// version.
	Vendor401        *time.Time `json:"last_vendor_401,omitempty"`
	Vendor401Version int        `json:"last_vendor_401_version,omitempty"`
	// Probe is the last proof of a rotated version: when, which version,
	// and what the vendor said (accepted, refused, unknown, busy).
	ProbeAt      *time.Time `json:"last_probe,omitempty"`
	ProbeVersion int        `json:"last_probe_version,omitempty"`
	ProbeResult  string     `json:"last_probe_result,omitempty"`
	Error        string     `json:"error,omitempty"`
}

// credentialsDoc is /credentials: the upstreams' credentials, and the
// audit signing key's status on its own.
type credentialsDoc struct {
	Credentials  []credentialRow `json:"credentials"`
	AuditSigning *signingStatus  `json:"audit_signing,omitempty"`
}

// credentials lists every credential's state for /credentials.
func (a *app) credentials() []credentialRow {
	refusals := a.proxy.LastVendorRefusals()
	var rows []credentialRow
	for _, s := range a.creds.current().Status() {
		if !upstreamCredential(s.Name) {
			continue // its own line: credentialsDoc.AuditSigning
		}
		r := credentialRow{Upstream: s.Name, Source: s.Source, Ref: s.Ref, Loaded: s.Loaded, Version: s.Version, Error: s.LastErr}
		if s.Loaded {
			t := s.ReadAt.UTC()
			r.ReadAt = &t
		}
		if !s.Expiry.At.IsZero() {
			t := s.Expiry.At.UTC()
			r.ExpiresAt, r.ExpiryFrom = &t, s.Expiry.From
		}
		if !s.Probe.At.IsZero() {
			t := s.Probe.At.UTC()
			r.ProbeAt, r.ProbeVersion, r.ProbeResult = &t, s.Probe.Version, s.Probe.Result
		}
		switch {
		case !s.Loaded:
			r.State = "not loaded"
		case s.Rejected:
			r.State = "rotation rejected"
		case s.CredentialExpired:
			r.State = "expired"
		case s.Expiring:
			r.State = "expiring"
		case s.Stale:
			r.State = "stale"
		default:
			r.State = "ok"
		}
		if v, ok := refusals[s.Name]; ok {
			t := v.At.UTC()
			r.Vendor401, r.Vendor401Version = &t, v.Version
		}
		rows = append(rows, r)
	}
	return rows
}

// credentialsCmd prints the running instance's credentials, read from its
// admin listener: one row per upstream, or JSON.
func credentialsCmd(args []string, stdout io.Writer) error {
	fs := newFlags("credentials", "credentials [--admin URL] [--format table|json]", stdout)
	admin := fs.String("admin", "http://127.0.0.1:9090", "the running keybroker's admin listener")
	format := fs.String("format", "table", "table or json")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if *format != "table" && *format != "json" {
		return usageError{fmt.Errorf("--format %q: table or json", *format)}
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(strings.TrimSuffix(*admin, "/") + "/credentials")
	if err != nil {
		return fmt.Errorf("read the admin listener at %s: %w", *admin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the admin listener at %s answered %s", *admin, resp.Status)
	}
	var doc credentialsDoc
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return errors.New("the admin listener's /credentials is not what keybroker serves")
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	rows := doc.Credentials
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tSOURCE\tREF\tVERSION\tREAD\tEXPIRES (FROM)\tLAST PROBE\tLAST VENDOR 401\tSTATE")
	day := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Format("2006-01-02 15:04")
	}
	for _, r := range rows {
		exp := "unknown"
		if r.ExpiresAt != nil {
			exp = r.ExpiresAt.Format("2006-01-02") + " (" + r.ExpiryFrom + ")"
		}
		last := day(r.Vendor401)
		if r.Vendor401 != nil {
			last += fmt.Sprintf(" (v%d)", r.Vendor401Version)
		}
		state := r.State
		if r.Error != "" {
			state += ": " + r.Error
		}
		probe := day(r.ProbeAt)
		if r.ProbeAt != nil {
			probe += fmt.Sprintf(" v%d %s", r.ProbeVersion, r.ProbeResult)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Upstream, r.Source, r.Ref, r.Version, day(r.ReadAt), exp, probe, last, state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if sg := doc.AuditSigning; sg != nil {
		fmt.Fprintln(stdout, "\n"+sg.line())
	}
	return nil
}
