package main

import (
	"encoding/json"
	"net/http"
	"time"
)

// readiness is /readyz's JSON body: why keybroker is or is not ready.
type readiness struct {
	Ready       bool              `json:"ready"`
	Credentials []credentialState `json:"credentials"`
	Audit       string            `json:"audit"`
	Vault       string            `json:"vault,omitempty"`
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
	if a.metrics != nil {
		mux.Handle("GET /metrics", a.metrics.Handler())
	}
	return mux
}

func (a *app) readiness() readiness {
	ok, sts := a.creds.current().Ready()
	rd := readiness{Ready: ok, Audit: "ok"}
	now := time.Now()
	for _, s := range sts {
		cs := credentialState{Upstream: s.Name, Source: s.Source, Ref: s.Ref, Loaded: s.Loaded,
			Version: s.Version, Stale: s.Stale, Expired: s.Expired, Error: s.LastErr, Reads: s.Reads}
		if s.Loaded {
			cs.AgeS = int64(now.Sub(s.ReadAt).Seconds())
		}
		rd.Credentials = append(rd.Credentials, cs)
	}
	if err := a.auditor.Check(); err != nil {
		rd.Ready = false
		rd.Audit = err.Error()
	}
	if a.vault != nil {
		// Credentials are served from the cache while Vault is away, so a
		// Vault outage alone does not make keybroker unready.
		rd.Vault = "logged in"
		if _, ok := a.vault.TokenExpiry(); !ok {
			rd.Vault = "not logged in (see the operational log)"
		}
	}
	return rd
}
