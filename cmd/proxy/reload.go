package main

import (
	"os"
	"reflect"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/config"
)

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
	logWarnings(a.log, cfg)
	a.event(audit.Event{Name: "config_reloaded"})
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
	{"oauth", func(c *config.Config) any { return c.OAuth }},
	{"server.max_header_bytes", func(c *config.Config) any { return c.Server.MaxHeaderBytes }},
	{"server.max_connections", func(c *config.Config) any { return c.Server.MaxConnections }},
	{"server.read_header_timeout", func(c *config.Config) any { return c.Server.ReadHeaderTimeout }},
	{"server.idle_timeout", func(c *config.Config) any { return c.Server.IdleTimeout }},
	{"server.unidentified.summary_interval", func(c *config.Config) any { return c.Server.Unidentified.SummaryInterval }},
	{"server.refusals.summary_interval", func(c *config.Config) any { return c.Server.Refusals.SummaryInterval }},
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
