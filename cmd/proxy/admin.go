package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
)

// readiness is /readyz's JSON body: why keybroker is or is not ready.
type readiness struct {
	Ready       bool              `json:"ready"`
	Credentials []credentialState `json:"credentials"`
	Audit       string            `json:"audit"`
	// AuditDisk warns before the audit filesystem is full; low space alone
	// does not make keybroker unready (a failed write does).
	AuditDisk *diskState `json:"audit_disk,omitempty"`
	Vault     string     `json:"vault,omitempty"`
	// CredentialExpiry lists credentials within secrets.expiry_warning of
	// their expiry, and those past it; neither makes keybroker unready
	// (the vendor is the judge).
	CredentialExpiry *expiryState `json:"credential_expiry,omitempty"`
	// CredentialRejected lists upstreams whose rotated credential the
	// vendor refused: the version in use keeps serving (a warning).
	CredentialRejected []string `json:"credential_rejected,omitempty"`
	// VendorTokenFailing lists OAuth upstreams whose token endpoint fails:
	// calls go on with the cached token until it expires (a warning).
	VendorTokenFailing []tokenState `json:"vendor_token_failing,omitempty"`
	// IdentityUnavailable lists JWT issuers whose keys cannot be had: their
	// callers get 503 identity_unavailable (the others are served).
	IdentityUnavailable []tokenState `json:"identity_unavailable,omitempty"`
	// AuditSigning is the checkpoint signing key's status (audit.signing).
	AuditSigning *signingStatus `json:"audit_signing,omitempty"`
}

// tokenState names what fails (an upstream, or a JWT issuer) and why.
type tokenState struct {
	Upstream string `json:"upstream,omitempty"`
	Issuer   string `json:"issuer,omitempty"`
	Error    string `json:"error"`
}

type expiryState struct {
	Expiring []expiryEntry `json:"expiring"`
	Expired  []expiryEntry `json:"expired"`
}

type expiryEntry struct {
	Upstream  string    `json:"upstream"`
	Version   int       `json:"version"`
	ExpiresAt time.Time `json:"expires_at"`
	Source    string    `json:"source"`
}

type diskState struct {
	FreeBytes    uint64 `json:"free_bytes"`
	MinFreeBytes int64  `json:"min_free_bytes"`
	Low          bool   `json:"low"`
}

type credentialState struct {
	Upstream string `json:"upstream"`
	Source   string `json:"source"`
	Ref      string `json:"ref"`
	Loaded   bool   `json:"loaded"`
	Version  int    `json:"version,omitempty"`
	AgeS     int64  `json:"age_seconds,omitempty"`
	Stale    bool   `json:"stale,omitempty"`
	Expired  bool   `json:"expired,omitempty"`
	Error    string `json:"error,omitempty"`
	// Reads counts source reads since start (one per refresh interval in
	// steady state, whatever the load).
	Reads int64 `json:"reads"`
}

// adminHandler serves /healthz (the process answers), /readyz (every
// credential loaded and usable, the audit trail writable) and /metrics.
func (a *app) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		rd := a.readiness()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !rd.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rd)
	})
	mux.HandleFunc("GET /credentials", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(credentialsDoc{Credentials: a.credentials(), AuditSigning: a.checkpoints.status(time.Now())})
	})
	if a.metrics != nil {
		mux.Handle("GET /metrics", a.metrics.Handler())
	}
	if a.cfg.Admin.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (a *app) readiness() readiness {
	h := a.health(nil)
	rd := readiness{Ready: h.credentialsReady, Audit: "ok"}
	for _, s := range h.Credentials {
		cs := credentialState{Upstream: s.Name, Source: s.Source, Ref: s.Ref, Loaded: s.Loaded,
			Version: s.Version, Stale: s.Stale, Expired: s.Expired, Error: s.LastErr, Reads: s.Reads}
		if s.Loaded {
			cs.AgeS = int64(h.at.Sub(s.ReadAt).Seconds())
		}
		rd.Credentials = append(rd.Credentials, cs)
		if s.Rejected {
			rd.CredentialRejected = append(rd.CredentialRejected, s.Name)
		}
		if s.Expiring || s.CredentialExpired {
			if rd.CredentialExpiry == nil {
				rd.CredentialExpiry = &expiryState{Expiring: []expiryEntry{}, Expired: []expiryEntry{}}
			}
			x := expiryEntry{Upstream: s.Name, Version: s.Version, ExpiresAt: s.Expiry.At.UTC(), Source: s.Expiry.From}
			if s.CredentialExpired {
				rd.CredentialExpiry.Expired = append(rd.CredentialExpiry.Expired, x)
			} else {
				rd.CredentialExpiry.Expiring = append(rd.CredentialExpiry.Expiring, x)
			}
		}
	}
	rd.VendorTokenFailing = h.failingTokens()
	for _, st := range h.issuers {
		if !st.Available {
			msg := "no keys yet"
			if st.Keys > 0 {
				msg = "its last keys are more than 24h old"
			}
			if st.LastError != "" {
				msg += ": " + st.LastError
			}
			rd.IdentityUnavailable = append(rd.IdentityUnavailable, tokenState{Issuer: st.Issuer, Error: msg})
		}
	}
	rd.AuditSigning = h.signing
	// The probe that ends an audit failure runs here, not in health: a
	// scrape reads state, /readyz may act on it.
	if err := a.auditor.Check(); err != nil {
		rd.Ready = false
		rd.Audit = err.Error()
	}
	if sp := h.AuditSpace; sp != nil {
		rd.AuditDisk = &diskState{FreeBytes: sp.Free, MinFreeBytes: a.minFree, Low: sp.Low}
	}
	// Vault is reported only when the running configuration uses it.
	// Credentials are served from the cache while Vault is away, so a
	// Vault outage alone does not make keybroker unready.
	if v := h.Vault; v != nil {
		rd.Vault = "logged in"
		if !v.LoggedIn {
			rd.Vault = "not logged in (see the operational log)"
		}
	}
	return rd
}

// auditSpace returns the free space on the audit filesystem and whether it
// is below audit.min_free_bytes.
func (a *app) auditSpace() (free uint64, low, ok bool) {
	sp, ok := a.auditor.Space()
	if !ok {
		return 0, false, false
	}
	return sp.Free, sp.Free < uint64(a.minFree), true
}

// watchAuditSpace logs, and records in the audit, when free space on the
// audit filesystem falls below audit.min_free_bytes and when it recovers,
// so operators hear of it before the disk is full and calls are refused.
func (a *app) watchAuditSpace(ctx context.Context, every time.Duration) {
	wasLow := false
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		free, low, ok := a.auditSpace()
		if ok && low != wasLow {
			wasLow = low
			if low {
				a.log.Warn("audit filesystem low on space: calls are refused once the audit cannot be written",
					zap.Uint64("free_bytes", free), zap.Int64("min_free_bytes", a.minFree))
				a.event(audit.Event{Name: "audit_disk_low", Detail: fmt.Sprintf("%d bytes free, below audit.min_free_bytes %d", free, a.minFree)})
			} else {
				a.log.Info("audit filesystem has room again", zap.Uint64("free_bytes", free))
				a.event(audit.Event{Name: "audit_disk_ok", Detail: fmt.Sprintf("%d bytes free", free)})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
