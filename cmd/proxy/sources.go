package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/secrets"
)

// credentialSpecs builds one cache entry per upstream, with its source.
func (a *app) credentialSpecs(ctx context.Context) ([]secrets.Spec, error) {
	return specsFor(ctx, a.cfg, a.vaultClient)
}

type vaultFactory func(ctx context.Context) (*secrets.Vault, error)

func specsFor(ctx context.Context, cfg *config.Config, vault vaultFactory) ([]secrets.Spec, error) {
	var specs []secrets.Spec
	var v *secrets.Vault
	for i, u := range cfg.Upstreams {
		cr := u.Credential
		spec := secrets.Spec{Name: u.Name, Required: u.Auth.Fields()}
		switch {
		case cr.Vault != nil:
			if v == nil {
				var err error
				if v, err = vault(ctx); err != nil {
					return nil, err
				}
			}
			spec.Source = v.Source(cr.Vault.Mount, cr.Vault.Path, cr.Vault.KVVersion)
		case cr.File != nil:
			spec.Source = secrets.NewFileSource(cr.File.Path)
		case cr.Env != nil:
			single := ""
			if f := u.Auth.Fields(); len(f) == 1 {
				single = f[0]
			}
			spec.Source = secrets.NewEnvSource(os.LookupEnv, cr.Env.Key, cr.Env.Fields, single)
		default:
			return nil, fmt.Errorf("upstreams[%d].credential: no source", i)
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

// checkSecrets reads every upstream's credential once and reports, per
// upstream, whether each required field is there and which version was
// read. It never prints a value.
func checkSecrets(ctx context.Context, cfg *config.Config, out io.Writer) error {
	a := &app{cfg: cfg, log: newLogger("error", io.Discard)}
	specs, err := a.credentialSpecs(ctx)
	if err != nil {
		return err
	}
	defer a.close()
	if a.vault != nil {
		if err := a.vault.Login(ctx); err != nil {
			return fmt.Errorf("vault login (%s at %s): %w", cfg.Vault.Auth.Method, cfg.Vault.Address, err)
		}
		fmt.Fprintf(out, "vault: logged in with method %s at %s\n", cfg.Vault.Auth.Method, cfg.Vault.Address)
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tSOURCE\tREF\tVERSION\tFIELDS\tSTATUS")
	failed := 0
	for _, s := range specs {
		r, err := s.Source.Read(ctx)
		var fields []string
		status := "ok"
		for _, f := range s.Required {
			v, present := r.Fields[f]
			switch {
			case err != nil:
				fields = append(fields, f+"=?")
			case !present:
				fields = append(fields, f+"=missing")
				status = "missing field"
			case strings.TrimSpace(string(v)) != string(v) || v == "":
				fields = append(fields, f+"=invalid")
				status = "empty or white-space-padded field"
			default:
				fields = append(fields, f+"=present")
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

// vaultClient makes the shared Vault client (once). It does not log in:
// Run does, and retries, so that keybroker starts (unready) while Vault is
// down and becomes ready when it is back.
func (a *app) vaultClient(context.Context) (*secrets.Vault, error) {
	if a.vault != nil {
		return a.vault, nil
	}
	vc := a.cfg.Vault
	tok, _ := os.LookupEnv("VAULT_TOKEN")
	v, err := secrets.NewVault(secrets.VaultOptions{
		Address:      vc.Address,
		Namespace:    vc.Namespace,
		CAFile:       vc.CAFile,
		Method:       vc.Auth.Method,
		Token:        tok,
		TokenFile:    vc.Auth.TokenFile,
		Mount:        vc.Auth.Mount,
		RoleID:       vc.Auth.RoleID,
		SecretIDFile: vc.Auth.SecretIDFile,
		Role:         vc.Auth.Role,
		JWTFile:      vc.Auth.JWTFile,
		Log:          a.log.Named("vault"),
		OnEvent:      a.vaultEvent,
	})
	if err != nil {
		return nil, err
	}
	a.vault = v
	return v, nil
}

func (a *app) vaultEvent(ev secrets.Event) {
	if a.auditor == nil {
		return
	}
	a.event(audit.Event{Name: ev.Type, Source: ev.Source, Ref: ev.Ref, Detail: ev.Error})
}
