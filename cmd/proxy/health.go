package main

import (
	"maps"
	"slices"
	"time"

	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/metrics"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/secrets"
)

// health is keybroker's state at one moment, read in one place: /readyz
// renders it and every scrape of /metrics exports its metrics.Health, so
// the two never disagree about what a state is. Reading it changes
// nothing (the audit trail's recovery probe is /readyz's own step).
type health struct {
	metrics.Health
	at time.Time
	// credentialsReady: every credential (the audit signing key's too) is
	// loaded and unexpired.
	credentialsReady bool
	// tokenFailures are the OAuth upstreams whose token endpoint fails.
	tokenFailures map[string]string
	issuers       []jwtauth.IssuerStatus
	signing       *signingStatus
}

// health reads the state once; upstreams are those whose quotas to read
// (nil: none).
func (a *app) health(upstreams []string) health {
	h := health{at: time.Now()}
	ok, all := a.creds.current().Ready()
	h.credentialsReady = ok
	h.Credentials = slices.DeleteFunc(slices.Clone(all), func(s secrets.Status) bool { return !upstreamCredential(s.Name) })
	h.signing = a.checkpoints.statusFrom(h.at, all)
	if h.signing != nil {
		h.Signing = &metrics.Signing{Loaded: h.signing.Loaded, OldestUnsigned: time.Duration(h.signing.OldestUnsignedS) * time.Second}
	}
	if v := a.vault.Load(); v != nil {
		exp, in := v.TokenExpiry()
		h.Vault = &metrics.VaultLogin{LoggedIn: in, Expiry: exp}
	}
	h.AuditWritten, h.AuditFailed = a.auditor.Stats()
	h.LimiterFallback = a.redisLimiter != nil && a.redisLimiter.InFallback()
	if free, low, ok := a.auditSpace(); ok {
		h.AuditSpace = &metrics.AuditSpace{Free: free, Low: low}
	}
	if p := a.proxy; p != nil {
		h.CertExpiry = p.CertExpiries()
	}
	h.issuers = a.jwt.Load().Issuers()
	h.Issuers = map[string]bool{}
	for _, st := range h.issuers {
		h.Issuers[st.Issuer] = st.Available
	}
	if a.tokens != nil {
		h.tokenFailures = a.tokens.Failures()
	}
	if a.quotaUsage != nil {
		h.Quotas = map[string]metrics.QuotaUse{}
	}
	if a.shareUsage != nil {
		h.Shares = map[string][]metrics.ShareUse{}
	}
	for _, up := range upstreams {
		key := proxy.QuotaKey(up)
		if a.quotaUsage != nil {
			in, req := a.quotaUsage(key)
			h.Quotas[up] = metrics.QuotaUse{InUse: in, Requests: req}
		}
		if a.shareUsage != nil {
			for _, u := range a.shareUsage(key) {
				h.Shares[up] = append(h.Shares[up], metrics.ShareUse{Caller: u.Caller, Reserved: u.Reserved, Shared: u.Shared})
			}
		}
	}
	return h
}

// failingTokens lists the OAuth upstreams whose token endpoint fails, by
// name.
func (h health) failingTokens() []tokenState {
	var out []tokenState
	for _, name := range slices.Sorted(maps.Keys(h.tokenFailures)) {
		out = append(out, tokenState{Upstream: name, Error: h.tokenFailures[name]})
	}
	return out
}
