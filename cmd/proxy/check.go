package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/secrets"
)

// assembleForCheck assembles cfg as serve does, logging in to Vault first
// when the configuration uses it.
func assembleForCheck(ctx context.Context, cfg *config.Config, out io.Writer) (assemble.Parts, error) {
	var vault *secrets.Vault
	if cfg.UsesVault() {
		opts, err := assemble.VaultOptions(cfg.Vault, os.LookupEnv)
		if err != nil {
			return assemble.Parts{}, err
		}
		if vault, err = secrets.NewVault(opts); err != nil {
			return assemble.Parts{}, err
		}
		if err := vault.Login(ctx); err != nil {
			return assemble.Parts{}, fmt.Errorf("vault login (%s at %s): %w", cfg.Vault.Auth.Method, cfg.Vault.Address, err)
		}
		fmt.Fprintf(out, "vault: logged in with method %s at %s\n", cfg.Vault.Auth.Method, cfg.Vault.Address)
	}
	return assemble.Assemble(cfg, vault, os.LookupEnv)
}

// checkSecrets reads every credential once and reports, per upstream,
// whether each required field is there and which version was read. It
// never prints a value.
func checkSecrets(ctx context.Context, parts assemble.Parts, out io.Writer) error {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tSOURCE\tREF\tVERSION\tFIELDS\tSTATUS")
	failed := 0
	for _, s := range parts.Specs {
		r, err := s.Source.Read(ctx)
		var fields []string
		status := "ok"
		for _, f := range s.Required {
			switch ferr := secrets.CheckField(r.Fields, f); {
			case err != nil:
				fields = append(fields, f+"=?")
			case ferr == nil:
				fields = append(fields, f+"=present")
			case errors.Is(ferr, secrets.ErrMissing):
				fields = append(fields, f+"=missing")
				status = "missing field"
			case errors.Is(ferr, secrets.ErrPlaceholder):
				fields = append(fields, f+"=placeholder")
				status = "placeholder credential (" + secrets.PlaceholderPrefix + "…): put the real value in"
			default:
				fields = append(fields, f+"=invalid")
				status = "empty or white-space-padded field"
			}
		}
		if err != nil {
			status = err.Error()
		}
		if status != "ok" {
			failed++
		}
		ver := "-"
		if r.Version > 0 {
			ver = fmt.Sprint(r.Version)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Source.Kind(), s.Source.Ref(), ver, strings.Join(fields, ","), status)
	}
	tw.Flush()
	if failed > 0 {
		return errors.New("some credentials cannot be used; see the table above")
	}
	return nil
}

// checkUpstreams opens a connection to every upstream the way calls do and
// reports the certificate chain, the protocol and the time it took. It
// sends no request and no vendor credential.
func checkUpstreams(ctx context.Context, parts assemble.Parts, out io.Writer) error {
	creds := specReader(parts.Specs)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tURL\tVIA\tPROTOCOL\tCERTIFICATE CHAIN (subject, expires)\tTOOK\tSTATUS")
	failed := 0
	for _, up := range parts.Routes.Upstreams {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ch, err := egress.Check(cctx, proxy.NewDialer(up, creds.Get))
		cancel()
		var chain []string
		for _, c := range ch.Chain {
			chain = append(chain, fmt.Sprintf("%s (%s)", c.Subject.CommonName, c.NotAfter.UTC().Format("2006-01-02")))
		}
		status := "ok"
		if err != nil {
			status, failed = err.Error(), failed+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", up.Name, up.Target, ch.Via, orDash(ch.Protocol),
			orDash(strings.Join(chain, " <- ")), ch.Took.Round(time.Millisecond), status)
	}
	tw.Flush()
	if failed > 0 {
		return errors.New("some upstreams cannot be reached; see the table above")
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// specReader reads a credential straight from its source (validate has no
// cache); only the egress proxy's is asked for.
type specReader []secrets.Spec

func (r specReader) Get(ctx context.Context, name string) (secrets.Credential, error) {
	for _, s := range r {
		if s.Name == name {
			rd, err := s.Source.Read(ctx)
			if err != nil {
				return secrets.Credential{}, err
			}
			return secrets.Credential{Fields: rd.Fields, Version: rd.Version, Source: s.Source.Kind(), Ref: s.Source.Ref()}, nil
		}
	}
	return secrets.Credential{}, secrets.ErrUnknown
}
