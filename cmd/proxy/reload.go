package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/secrets"
)

// liveCredentials is the proxy's view of the credential cache; a reload
// that changes credential sources swaps the cache under it.
type liveCredentials struct {
	cur atomic.Pointer[secrets.Cache]
}

func (l *liveCredentials) current() *secrets.Cache { return l.cur.Load() }

func (l *liveCredentials) Get(ctx context.Context, upstream string) (secrets.Credential, error) {
	return l.cur.Load().Get(ctx, upstream)
}

func (l *liveCredentials) Reread(ctx context.Context, upstream string) (secrets.Credential, error) {
	return l.cur.Load().Reread(ctx, upstream)
}

// reloadWait bounds how long new credentials may take to load on a reload.
const reloadWait = 15 * time.Second

// reload runs on SIGHUP: it reopens the audit file (logrotate), then reads
// the configuration again. A configuration that does not validate, that
// changes a setting only a restart can change, or whose new credentials
// cannot be loaded, is rejected and the running one stays. A good one is
// swapped in atomically. Calls in flight finish on what they started with;
// none is dropped.
func (a *app) reload() {
	if err := a.auditor.Reopen(); err != nil {
		a.log.Error("audit file reopen failed", zap.Error(err))
	} else {
		a.log.Info("audit file reopened")
	}
	if a.cfgPath == "" {
		return
	}
	cfg, err := config.Load(a.cfgPath, os.LookupEnv)
	if err == nil {
		err = a.apply(cfg)
	}
	if err != nil {
		a.log.Error("configuration rejected; the running one stays", zap.Error(err))
		a.event(audit.Event{Name: "config_rejected", Detail: err.Error()})
		return
	}
	a.log.Info("configuration reloaded", zap.Int("upstreams", len(cfg.Upstreams)), zap.Int("callers", len(cfg.Callers)))
	a.event(audit.Event{Name: "config_reloaded"})
}

// apply makes cfg the running configuration: restart-only check, Vault
// client (kept, made, re-made or dropped), assembly, new credentials loaded
// and ready; then, with every fallible step done, the swap; then the old
// cache and Vault client are stopped.
func (a *app) apply(cfg *config.Config) error {
	if f := restartOnlyChanges(a.cfg, cfg); len(f) > 0 {
		return fmt.Errorf("%s changed: only a restart applies it; restart keybroker", strings.Join(f, ", "))
	}
	old := a.vault.Load()
	next := old
	switch {
	case !cfg.UsesVault():
		next = nil
	case old == nil || !reflect.DeepEqual(old.cfg, cfg.Vault):
		v, err := a.newVault(cfg.Vault)
		if err != nil {
			return err
		}
		a.startVault(v)
		next = v
	}
	abandon := func() {
		if next != old && next != nil {
			next.stop()
		}
	}
	parts, err := assemble.Assemble(cfg, next.client(), os.LookupEnv)
	if err != nil {
		abandon()
		return err
	}
	var cache *secrets.Cache
	var stopCache func()
	if next != old || !sameCredentials(a.cfg, cfg) {
		if cache, err = a.newCache(parts); err != nil {
			abandon()
			return err
		}
		stopCache = a.background(cache.Run)
		ctx, cancel := context.WithTimeout(a.bg, reloadWait)
		err = waitLoaded(ctx, cache)
		cancel()
		if err != nil {
			stopCache()
			abandon()
			return err
		}
	}

	// The swap. New credentials first, so that a new upstream has its
	// credential the moment it is routed.
	var oldCache *secrets.Cache
	if cache != nil {
		oldCache = a.creds.cur.Swap(cache)
	}
	if err := a.proxy.Update(parts.Routes); err != nil {
		if cache != nil {
			a.creds.cur.Store(oldCache)
			stopCache()
		}
		abandon()
		return err
	}
	a.vault.Store(next)
	a.metrics.SetNames(parts.Upstreams, parts.Callers)
	a.cfg = cfg

	// The old parts end; calls in flight hold their credential already.
	if cache != nil {
		a.stopCache()
		a.stopCache = stopCache
	}
	if old != nil && old != next {
		old.stop()
	}
	return nil
}

// waitLoaded waits until every credential of c is loaded, or ctx ends.
func waitLoaded(ctx context.Context, c *secrets.Cache) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ok, sts := c.Ready()
		if ok {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			for _, s := range sts {
				if !s.Loaded || s.Expired {
					return fmt.Errorf("credential for upstream %s (%s %s) could not be loaded: %s", s.Name, s.Source, s.Ref, s.LastErr)
				}
			}
			return errors.New("credentials could not be loaded")
		}
	}
}

// restartOnly are the settings a running process cannot take over: its
// listeners and their limits, the limiter backend, the audit sink and the
// log. Everything else, Vault included, reloads.
var restartOnly = []struct {
	field string
	get   func(*config.Config) any
}{
	{"listen", func(c *config.Config) any { return c.Listen }},
	{"tls", func(c *config.Config) any { return c.TLS }},
	{"admin", func(c *config.Config) any { return c.Admin }},
	{"ratelimit", func(c *config.Config) any { return c.RateLimit }},
	{"audit", func(c *config.Config) any { return c.Audit }},
	{"log", func(c *config.Config) any { return c.Log }},
	{"server.max_header_bytes", func(c *config.Config) any { return c.Server.MaxHeaderBytes }},
	{"server.max_connections", func(c *config.Config) any { return c.Server.MaxConnections }},
	{"server.read_header_timeout", func(c *config.Config) any { return c.Server.ReadHeaderTimeout }},
	{"server.idle_timeout", func(c *config.Config) any { return c.Server.IdleTimeout }},
	{"server.unidentified.summary_interval", func(c *config.Config) any { return c.Server.Unidentified.SummaryInterval }},
}

// restartOnlyChanges names the restart-only settings that differ.
func restartOnlyChanges(old, cur *config.Config) []string {
	var f []string
	for _, r := range restartOnly {
		if !reflect.DeepEqual(r.get(old), r.get(cur)) {
			f = append(f, r.field)
		}
	}
	return f
}

// sameCredentials reports whether the credential cache can stay as it is.
func sameCredentials(old, cur *config.Config) bool {
	type cred struct {
		name   string
		source config.Credential
		auth   config.Auth
	}
	summary := func(c *config.Config) []cred {
		var out []cred
		for _, u := range c.Upstreams {
			out = append(out, cred{u.Name, u.Credential, u.Auth})
		}
		return out
	}
	return old.Secrets == cur.Secrets && reflect.DeepEqual(summary(old), summary(cur)) &&
		reflect.DeepEqual(old.Egress.ProxyCredential, cur.Egress.ProxyCredential) &&
		reflect.DeepEqual(old.Audit.Signing, cur.Audit.Signing)
}
