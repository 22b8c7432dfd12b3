package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/secrets"
)

// checkSecrets reads every upstream's credential once and reports, per
// upstream, whether each required field is there and which version was
// read. It assembles the configuration as serve does, and never prints a
// value.
func checkSecrets(ctx context.Context, cfg *config.Config, out io.Writer) error {
	var vault *secrets.Vault
	if cfg.UsesVault() {
		opts, err := assemble.VaultOptions(cfg.Vault, os.LookupEnv)
		if err != nil {
			return err
		}
		if vault, err = secrets.NewVault(opts); err != nil {
			return err
		}
		if err := vault.Login(ctx); err != nil {
			return fmt.Errorf("vault login (%s at %s): %w", cfg.Vault.Auth.Method, cfg.Vault.Address, err)
		}
		fmt.Fprintf(out, "vault: logged in with method %s at %s\n", cfg.Vault.Auth.Method, cfg.Vault.Address)
	}
	parts, err := assemble.Assemble(cfg, vault, os.LookupEnv)
	if err != nil {
		return err
	}
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
