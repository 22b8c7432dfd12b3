package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/netutil"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/metrics"
	"github.com/keybroker/keybroker/internal/oauth"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/secrets"
)

// readyFunc is told the listeners' addresses once keybroker serves (tests
// and tools use it instead of reading the log).
type readyFunc func(listen, admin net.Addr)

// serveCmd runs the proxy. GOMAXPROCS is the runtime's default (the CPU
// limit) or the operator's, never changed while serving.
func serveCmd(ctx context.Context, args []string, stderr, stdout io.Writer, ready readyFunc) error {
	fs := newFlags("serve", "[serve] --config FILE", stdout)
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log.Level, stderr)
	defer func() { _ = log.Sync() }()

	a, err := build(cfg, log)
	if err != nil {
		return err
	}
	a.cfgPath = fs.Lookup("config").Value.String()
	a.ready = ready
	defer a.close()
	return a.run(ctx)
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
// The parts one configuration assembles into (assemble.Parts) are swapped
// whole by a reload; the rest lives as long as the process.
type app struct {
	cfg     *config.Config // the running configuration; the run goroutine alone swaps it
	cfgPath string
	log     *zap.Logger
	ready   readyFunc

	auditor *audit.Writer
	// minFree is audit.min_free_bytes (the audit block is restart-only,
	// so it is read once, not from cfg).
	minFree int64
	metrics *metrics.Metrics
	// redisLimiter is set with ratelimit.backend: redis.
	redisLimiter *ratelimit.Redis
	// quotaUsage reads an upstream quota's use (calls holding a slot).
	quotaUsage func(key string) (inUse, requests int)
	// jwt verifies JWT callers' tokens (swapped on reload).
	jwt atomic.Pointer[jwtauth.Verifier]
	// shareUsage reads a shared quota's use by caller and class.
	shareUsage func(key string) []ratelimit.PartyUsage
	// vault is the Vault client of the running configuration, nil when it
	// uses none; a reload may replace it, the admin and metrics goroutines
	// read it.
	vault atomic.Pointer[vaultClient]
	creds liveCredentials
	// tokens serves credentials to the proxy: creds', with OAuth
	// upstreams' vendor tokens (their keepers live as long as the process;
	// a reload keeps those whose settings did not change).
	tokens *oauth.Credentials
	proxy  *proxy.Proxy

	closers []func()
	// checkpoints signs the trail (audit.signing); nil without it.
	checkpoints *checkpointer

	callerSrv *http.Server
	adminSrv  *http.Server

	// Background work, owned by run.
	bg        context.Context
	wg        sync.WaitGroup
	stopCache func()
}

// credentialEvent writes a credential lifecycle event to the audit trail.
func (a *app) credentialEvent(ev secrets.Event) {
	a.metrics.CredentialEvent(ev)
	detail := ev.Error
	if x := ev.Expiry; !x.At.IsZero() {
		detail = "expires at " + x.At.UTC().Format(time.RFC3339) + " (from " + x.From + ")"
	}
	a.event(audit.Event{Name: ev.AuditName(), Upstream: ev.Upstream, Source: ev.Source,
		Ref: ev.Ref, Version: ev.Version, OldVersion: ev.OldVersion, Detail: detail, Validated: ev.Validated, Status: ev.Status})
}

// logWarnings logs what validation found worth saying (an allow rule that
// matches no documented operation).
func logWarnings(log *zap.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		log.Warn("configuration warning", zap.String("warning", w))
	}
}

// closeInterrupted writes call_interrupted for every call the trail
// shows begun since the previous start but never ended (keybroker was
// killed, or its disk filled, while the call was at the vendor), and warns
// of each: the vendor may have acted on it.
func (a *app) closeInterrupted() {
	rec, err := a.auditor.CloseInterrupted(time.Now())
	if err != nil {
		a.log.Error("interrupted calls not named: the audit trail could not be read back or written", zap.Error(err))
	}
	if rec.Capped {
		a.log.Warn("interrupted calls looked for in the last 256 MiB of the audit file only: the previous start is further back",
			zap.Int64("limit_bytes", audit.RecoveryLimit))
	}
	for _, ev := range rec.Interrupted {
		a.log.Warn("call interrupted: it left for the vendor but has no end record; the vendor may have acted on it",
			zap.Uint64("begin_seq", ev.BeginSeq), zap.String("request_id", ev.RequestID), zap.String("caller", ev.Caller),
			zap.String("upstream", ev.Upstream), zap.String("method", ev.Method), zap.String("path", ev.Path), zap.String("begun", ev.Begun))
	}
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
	// Calls the last run left at the vendor are named first; then the
	// started event, before any background work can send a probe, and
	// before any call is accepted: an audit sink that cannot be written
	// is found now, and calls get 503.
	a.closeInterrupted()
	a.event(audit.Event{Name: audit.EventStarted, Detail: "keybroker " + buildVersion(), Replica: replicaName(a.cfg)})
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	a.bg = bg
	a.stopCache = a.background(a.creds.current().Run)
	a.background(a.proxy.Run)
	a.background(func(ctx context.Context) error { a.watchAuditSpace(ctx, 2*time.Second); return nil })
	a.startVault(a.vault.Load())
	if a.checkpoints != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.checkpoints.checkTransit(cctx)
		cancel()
		if err != nil {
			stopBG()
			a.wg.Wait()
			return err
		}
		a.background(a.checkpoints.run)
	}
	defer func() {
		stopBG()
		a.wg.Wait()
	}()

	// SIGHUP is caught before anything is served, so an early reload can
	// never hit the default action (terminate).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

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
	logWarnings(a.log, cfg)
	a.log.Info("keybroker serving", zap.String("listen", callerLn.Addr().String()),
		zap.String("admin", adminLn.Addr().String()), zap.Int("upstreams", len(cfg.Upstreams)),
		zap.String("version", buildVersion()))
	if a.ready != nil {
		a.ready(callerLn.Addr(), adminLn.Addr())
	}

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
		pool, err := assemble.CAPool(t.ClientCAFile, "tls.client_ca_file")
		if err != nil {
			ln.Close()
			return nil, err
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
	// The summaries of refusals go before the shutdown record, so that the
	// last checkpoint covers them too.
	a.proxy.FlushSummary()
	a.proxy.FlushRefusals()
	a.proxy.FlushTokens()
	a.event(audit.Event{Name: "shutdown"})
	if a.checkpoints != nil {
		// The last checkpoint covers the shutdown record.
		_ = a.checkpoints.write(context.Background())
	}
	return nil
}
