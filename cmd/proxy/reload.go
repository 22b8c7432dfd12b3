package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

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

// runCache runs c's refresh until the returned stop is called.
func (a *app) runCache(c *secrets.Cache) (stop func()) {
	ctx, cancel := context.WithCancel(a.bg)
	done := make(chan struct{})
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(done)
		_ = c.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

// reloadWait bounds how long new credentials may take to load on a reload.
const reloadWait = 15 * time.Second

// reload runs on SIGHUP: it reopens the audit file (logrotate), then reads
// the configuration again. A configuration that does not validate, or whose
// new credentials cannot be loaded, is rejected and the running one stays.
// A good one is swapped in atomically: callers, policy, upstreams and limits
// (rate-limit state is kept for unchanged upstreams), and the credential
// cache when credential sources changed. Calls in flight finish on what
// they started with; none is dropped.
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

func (a *app) apply(cfg *config.Config) error {
	if fields := needsRestart(a.cfg, cfg); len(fields) > 0 {
		a.log.Warn("these changes take effect only after a restart", zap.Strings("fields", fields))
		keepRestartOnly(a.cfg, cfg)
	}
	if !sameCredentials(a.cfg, cfg) {
		specs, err := specsFor(a.bg, cfg, a.vaultClient)
		if err != nil {
			return err
		}
		next, err := a.newCache(cfg, specs)
		if err != nil {
			return err
		}
		stopNext := a.runCache(next)
		if err := waitLoaded(next); err != nil {
			stopNext()
			return err
		}
		old := a.stopCache
		a.creds.cur.Store(next)
		a.stopCache = stopNext
		old()
	}
	if err := a.proxy.Update(routesOf(cfg)); err != nil {
		return err
	}
	a.metrics.SetNames(upstreamNames(cfg), callerNames(cfg))
	a.cfg = cfg
	return nil
}

func waitLoaded(c *secrets.Cache) error {
	deadline := time.Now().Add(reloadWait)
	for {
		ok, sts := c.Ready()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			for _, s := range sts {
				if !s.Loaded || s.Expired {
					return fmt.Errorf("credential for upstream %s (%s %s) could not be loaded: %s", s.Name, s.Source, s.Ref, s.LastErr)
				}
			}
			return errors.New("credentials could not be loaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// needsRestart names what changed that a running process cannot take over:
// listeners, TLS, Vault connection, limiter backend, audit path, log.
func needsRestart(old, cur *config.Config) []string {
	var f []string
	diff := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			f = append(f, name)
		}
	}
	diff("listen", old.Listen, cur.Listen)
	diff("tls", old.TLS, cur.TLS)
	diff("admin", old.Admin, cur.Admin)
	diff("vault", old.Vault, cur.Vault)
	diff("ratelimit", old.RateLimit, cur.RateLimit)
	diff("audit", old.Audit, cur.Audit)
	diff("log", old.Log, cur.Log)
	diff("server.max_header_bytes", old.Server.MaxHeaderBytes, cur.Server.MaxHeaderBytes)
	diff("server.max_connections", old.Server.MaxConnections, cur.Server.MaxConnections)
	return f
}

func keepRestartOnly(old, cur *config.Config) {
	cur.Listen, cur.TLS, cur.Admin, cur.Vault = old.Listen, old.TLS, old.Admin, old.Vault
	cur.RateLimit, cur.Audit, cur.Log = old.RateLimit, old.Audit, old.Log
	cur.Server.MaxHeaderBytes = old.Server.MaxHeaderBytes
	cur.Server.MaxConnections = old.Server.MaxConnections
}

// sameCredentials reports whether the credential cache can stay as it is.
func sameCredentials(old, cur *config.Config) bool {
	type cred struct {
		name   string
		source config.Credential
		fields []string
	}
	summary := func(c *config.Config) []cred {
		var out []cred
		for _, u := range c.Upstreams {
			out = append(out, cred{u.Name, u.Credential, u.Auth.Fields()})
		}
		return out
	}
	return old.Secrets == cur.Secrets && reflect.DeepEqual(summary(old), summary(cur))
}
