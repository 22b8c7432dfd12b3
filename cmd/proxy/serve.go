package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/netutil"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/metrics"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/secrets"
)

func serveCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log.Level, stderr)
	defer func() { _ = log.Sync() }()

	app, err := build(ctx, cfg, log)
	if err != nil {
		return err
	}
	app.cfgPath = fs.Lookup("config").Value.String()
	defer app.close()
	return app.run(ctx)
}

// newLogger returns the operational log: JSON on stderr.
func newLogger(level string, out io.Writer) *zap.Logger {
	lvl, _ := zapcore.ParseLevel(level)
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "time"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(out)), lvl)
	return zap.New(core)
}

// app is one running keybroker: every part wired, owned and stopped here.
type app struct {
	cfg     *config.Config
	cfgPath string
	log     *zap.Logger
	auditor *audit.Writer
	cache   *secrets.Cache // the current one; a reload may replace it
	creds   *liveCredentials
	proxy   *proxy.Proxy
	vault   *secrets.Vault
	// redisLimiter is set with ratelimit.backend: redis.
	redisLimiter *ratelimit.Redis
	metrics      *metrics.Metrics
	closers      []func()
	// minFree is audit.min_free_bytes (the audit block is restart-only,
	// so it is read once, not from cfg, which a reload replaces).
	minFree int64

	callerSrv *http.Server
	adminSrv  *http.Server

	// Background work, owned by run.
	bg        context.Context
	wg        *sync.WaitGroup
	stopCache func()
}

func build(ctx context.Context, cfg *config.Config, log *zap.Logger) (*app, error) {
	a := &app{cfg: cfg, log: log, minFree: cfg.Audit.MinFreeBytes}
	var err error
	if cfg.Audit.Path == "" {
		a.auditor = audit.NewWriter(os.Stdout)
	} else if a.auditor, err = audit.Open(cfg.Audit.Path); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, func() { _ = a.auditor.Close() })

	a.metrics = metrics.New(upstreamNames(cfg), callerNames(cfg), metrics.State{
		Credentials: func() []secrets.Status { return a.creds.current().Status() },
		VaultToken: func() (time.Time, bool) {
			if a.vault == nil {
				return time.Time{}, false
			}
			return a.vault.TokenExpiry()
		},
		Audit: a.auditor.Stats,
		LimiterFallback: func() bool {
			return a.redisLimiter != nil && a.redisLimiter.InFallback()
		},
		AuditSpace: a.auditSpace,
	})
	specs, err := a.credentialSpecs(ctx)
	if err != nil {
		a.close()
		return nil, err
	}
	a.cache, err = a.newCache(cfg, specs)
	if err != nil {
		a.close()
		return nil, err
	}

	upstreamLimiter, err := a.upstreamLimiter()
	if err != nil {
		a.close()
		return nil, err
	}
	a.proxy, err = proxy.New(routesOf(cfg), proxy.Options{
		Credentials:     a.creds,
		Auditor:         a.auditor,
		UpstreamLimiter: upstreamLimiter,
		Observer:        a.metrics,
		Log:             log.Named("proxy"),
		SummaryInterval: cfg.Server.Unidentified.SummaryInterval.D(),
	})
	if err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (a *app) newCache(cfg *config.Config, specs []secrets.Spec) (*secrets.Cache, error) {
	c, err := secrets.NewCache(specs, secrets.Options{
		RefreshInterval: cfg.Secrets.RefreshInterval.D(),
		MaxStale:        cfg.Secrets.MaxStale.D(),
		Log:             a.log.Named("secrets"),
		OnEvent:         a.credentialEvent,
	})
	if err != nil {
		return nil, err
	}
	if a.creds == nil {
		a.creds = &liveCredentials{}
		a.creds.cur.Store(c)
	}
	return c, nil
}

func upstreamNames(cfg *config.Config) []string {
	var n []string
	for _, u := range cfg.Upstreams {
		n = append(n, u.Name)
	}
	return n
}

func callerNames(cfg *config.Config) []string {
	var n []string
	for _, c := range cfg.Callers {
		n = append(n, c.Name)
	}
	return n
}

func routesOf(cfg *config.Config) proxy.Routes {
	un := cfg.Server.Unidentified
	return proxy.Routes{
		Upstreams:       cfg.Upstreams,
		Callers:         callers.NewRegistry(cfg.Callers, cfg.AllowAnonymous),
		ReportOnly:      cfg.PolicyMode == "report",
		MaxHeaderCount:  cfg.Server.MaxHeaderCount,
		ReadBodyTimeout: cfg.Server.ReadBodyTimeout.D(),
		Unidentified: proxy.UnidentifiedLimits{
			PerSource: halfAtOnce(un.PerSource),
			Total:     halfAtOnce(un.Total),
		},
	}
}

// halfAtOnce turns a quota into a limit of which half may come at once.
func halfAtOnce(q *config.Quota) ratelimit.Limit {
	return ratelimit.Limit{Requests: q.Requests, Per: q.Per.D(), Burst: max(1, q.Requests/2)}
}

// upstreamLimiter keeps vendor quotas: locally, or in Redis for replicas.
func (a *app) upstreamLimiter() (proxy.Limiter, error) {
	rl := a.cfg.RateLimit
	if rl.Backend != "redis" {
		return ratelimit.NewLocal(nil), nil
	}
	password := ""
	if rl.Redis.PasswordFile != "" {
		b, err := os.ReadFile(rl.Redis.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("ratelimit.redis.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	ratelimit.RouteRedisLogs(a.log.Named("redis"))
	r := ratelimit.NewRedis(ratelimit.RedisOptions{
		Address: rl.Redis.Address, Password: password, TLS: rl.Redis.TLS, Replicas: rl.Replicas,
		Log: a.log.Named("ratelimit"),
		OnFallback: func(on bool, reason string) {
			name := "limiter_recovered"
			if on {
				name = "limiter_fallback"
			}
			a.event(audit.Event{Name: name, Detail: reason})
		},
	})
	a.redisLimiter = r
	a.closers = append(a.closers, func() { _ = r.Close() })
	return r, nil
}

// credentialEvent writes a credential lifecycle event to the audit trail.
func (a *app) credentialEvent(ev secrets.Event) {
	a.metrics.CredentialEvent(ev)
	a.event(audit.Event{Name: "credential_" + ev.Type, Upstream: ev.Upstream, Source: ev.Source,
		Ref: ev.Ref, Version: ev.Version, OldVersion: ev.OldVersion, Detail: ev.Error})
}

func (a *app) event(ev audit.Event) {
	if err := a.auditor.WriteEvent(ev, time.Now()); err != nil {
		a.log.Error("audit event not written", zap.String("event", ev.Name), zap.Error(err))
	}
}

func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

// run serves until ctx ends, then shuts down gracefully: stop accepting,
// let in-flight calls finish up to server.shutdown_timeout, stop background
// work, close the audit file.
func (a *app) run(ctx context.Context) error {
	cfg := a.cfg
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	a.bg, a.wg = bg, &wg
	a.stopCache = a.runCache(a.cache)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = a.proxy.Run(bg)
	}()
	go func() {
		defer wg.Done()
		a.watchAuditSpace(bg, 2*time.Second)
	}()
	if a.vault != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = a.vault.Run(bg)
		}()
	}
	defer func() {
		stopBG()
		wg.Wait()
	}()

	// SIGHUP is caught before anything is served, so an early reload can
	// never hit the default action (terminate).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// The first record is written before any call is accepted: an audit
	// sink that cannot be written is found now, and calls get 503.
	a.event(audit.Event{Name: "started", Detail: "keybroker " + buildVersion()})
	callerLn, err := a.listenCallers()
	if err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		callerLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	a.callerSrv = &http.Server{
		Handler:           a.proxy,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		// OPTIONS * is refused by the proxy (400), not answered by net/http.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     zap.NewStdLog(a.log.Named("http")),
	}
	a.adminSrv = &http.Server{
		Handler:           a.adminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          zap.NewStdLog(a.log.Named("admin")),
	}
	errc := make(chan error, 2)
	go func() { errc <- serveOn(a.callerSrv, callerLn) }()
	go func() { errc <- serveOn(a.adminSrv, adminLn) }()
	a.log.Info("keybroker serving", zap.String("listen", callerLn.Addr().String()),
		zap.String("admin", adminLn.Addr().String()), zap.Int("upstreams", len(cfg.Upstreams)),
		zap.String("version", buildVersion()))

	for {
		select {
		case <-ctx.Done():
			return a.shutdown()
		case err := <-errc:
			_ = a.shutdown()
			return err
		case <-hup:
			a.reload()
		}
	}
}

func serveOn(srv *http.Server, ln net.Listener) error {
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (a *app) listenCallers() (net.Listener, error) {
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	// Open connections are capped (server.max_connections): past the cap,
	// new ones wait in the kernel's backlog until one closes, so memory
	// stays bounded whatever a client opens.
	ln = netutil.LimitListener(ln, a.cfg.Server.MaxConnections)
	t := a.cfg.TLS
	if t == nil {
		return ln, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			ln.Close()
			return nil, errors.New("tls.client_ca_file: no PEM certificate in it")
		}
		tc.ClientCAs = pool
		// Verify a certificate when one is sent; callers with keys need none.
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tls.NewListener(ln, tc), nil
}

func (a *app) shutdown() error {
	a.log.Info("shutting down", zap.Duration("timeout", a.cfg.Server.ShutdownTimeout.D()))
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.D())
	defer cancel()
	err := a.callerSrv.Shutdown(ctx)
	_ = a.adminSrv.Shutdown(ctx)
	if err != nil {
		a.log.Warn("in-flight calls cut off at shutdown_timeout", zap.Error(err))
	}
	a.proxy.FlushSummary()
	a.event(audit.Event{Name: "shutdown"})
	return nil
}
