package metrics

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/prometheus/client_golang/prometheus"
)

// stateCollector reads state at scrape time.
type stateCollector struct {
	st    State
	names *atomic.Pointer[names]
	mu    sync.Mutex
}

var (
	descCredAge     = prometheus.NewDesc("keybroker_credential_age_seconds", "Time since the credential was last read from its source.", []string{"upstream", "source"}, nil)
	descCredVersion = prometheus.NewDesc("keybroker_credential_version", "Version of the credential in use.", []string{"upstream", "source"}, nil)
	descCredStale   = prometheus.NewDesc("keybroker_credential_stale", "1 while the last good copy is served because its source fails.", []string{"upstream"}, nil)
	descCredLoaded  = prometheus.NewDesc("keybroker_credential_usable", "1 when the credential is loaded and within max_stale.", []string{"upstream"}, nil)
	descCredRej     = prometheus.NewDesc("keybroker_credential_rejected", "1 while a rotated version the vendor refused waits and the version in use keeps serving.", []string{"upstream"}, nil)
	descCredMax     = prometheus.NewDesc("keybroker_credential_max_stale_seconds", "How long the last good copy may be served while its source fails (secrets.max_stale).", []string{"upstream"}, nil)
	descCredExpiry  = prometheus.NewDesc("keybroker_credential_expiry_timestamp_seconds", "When the credential in use expires (Unix seconds); absent when unknown.", []string{"upstream", "from"}, nil)
	descCredReads   = prometheus.NewDesc("keybroker_credential_reads_total", "Reads of the credential's source.", []string{"upstream"}, nil)
	descVaultTTL    = prometheus.NewDesc("keybroker_vault_token_ttl_seconds", "Time left on keybroker's Vault token (-1: does not expire).", nil, nil)
	descVaultLogin  = prometheus.NewDesc("keybroker_vault_logged_in", "1 when keybroker holds a Vault token.", nil, nil)
	descAuditOK     = prometheus.NewDesc("keybroker_audit_records_total", "Audit records written.", nil, nil)
	descAuditErr    = prometheus.NewDesc("keybroker_audit_write_errors_total", "Audit records that could not be written.", nil, nil)
	descFallback    = prometheus.NewDesc("keybroker_ratelimit_fallback", "1 while Redis is unreachable and quotas are kept locally.", nil, nil)
	descDiskFree    = prometheus.NewDesc("keybroker_audit_disk_free_bytes", "Free space on the audit file's filesystem.", nil, nil)
	descDiskLow     = prometheus.NewDesc("keybroker_audit_disk_low", "1 while the audit filesystem has less than audit.min_free_bytes free.", nil, nil)
	descQuotaUse    = prometheus.NewDesc("keybroker_quota_in_use", "Calls holding a place in the upstream's quota window (all replicas, with Redis).", []string{"upstream"}, nil)
	descCertExpiry  = prometheus.NewDesc("keybroker_upstream_cert_expiry_timestamp_seconds", "When the vendor's TLS certificate, as last seen, expires (Unix seconds).", []string{"upstream"}, nil)
	descQuotaLeft   = prometheus.NewDesc("keybroker_quota_remaining", "Calls the upstream's quota window admits now.", []string{"upstream"}, nil)
	descIssuerUp    = prometheus.NewDesc("keybroker_jwt_issuer_keys_available", "1 while a JWT issuer's keys are held (its callers get 503 identity_unavailable otherwise).", []string{"issuer"}, nil)
	descSignUsable  = prometheus.NewDesc("keybroker_audit_signing_usable", "1 while the checkpoint signing key (audit.signing) is loaded.", nil, nil)
	descUnsignedAge = prometheus.NewDesc("keybroker_audit_oldest_unsigned_age_seconds", "Age of the oldest audit record no signed checkpoint covers yet (0: every record is covered).", nil, nil)
	descShareUse    = prometheus.NewDesc("keybroker_quota_share_in_use", "Slots of a shared upstream quota (rate_limit.shares) each caller holds, by class: reserved or shared.", []string{"upstream", "caller", "class"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCredRej, descCredMax, descCredExpiry, descCredAge, descCredVersion, descCredStale, descCredLoaded, descCredReads, descVaultTTL, descVaultLogin, descAuditOK, descAuditErr, descFallback, descDiskFree, descDiskLow, descQuotaUse, descQuotaLeft, descCertExpiry, descShareUse, descIssuerUp, descSignUsable, descUnsignedAge} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.st.Health == nil {
		return
	}
	h := c.st.Health(c.upstreams())
	for _, s := range h.Credentials {
		if s.Loaded {
			gauge(descCredAge, now.Sub(s.ReadAt).Seconds(), s.Name, s.Source)
			gauge(descCredVersion, float64(s.Version), s.Name, s.Source)
			if !s.Expiry.At.IsZero() {
				gauge(descCredExpiry, float64(s.Expiry.At.Unix()), s.Name, s.Expiry.From)
			}
		}
		gauge(descCredStale, b2f(s.Stale), s.Name)
		gauge(descCredMax, s.MaxStale.Seconds(), s.Name)
		gauge(descCredRej, b2f(s.Rejected), s.Name)
		gauge(descCredLoaded, b2f(s.Loaded && !s.Expired), s.Name)
		ch <- prometheus.MustNewConstMetric(descCredReads, prometheus.CounterValue, float64(s.Reads), s.Name)
	}
	if s := h.Signing; s != nil {
		gauge(descSignUsable, b2f(s.Loaded))
		gauge(descUnsignedAge, s.OldestUnsigned.Seconds())
	}
	if v := h.Vault; v != nil {
		gauge(descVaultLogin, b2f(v.LoggedIn))
		if v.LoggedIn {
			ttl := -1.0
			if !v.Expiry.IsZero() {
				ttl = v.Expiry.Sub(now).Seconds()
			}
			gauge(descVaultTTL, ttl)
		}
	}
	ch <- prometheus.MustNewConstMetric(descAuditOK, prometheus.CounterValue, float64(h.AuditWritten))
	ch <- prometheus.MustNewConstMetric(descAuditErr, prometheus.CounterValue, float64(h.AuditFailed))
	gauge(descFallback, b2f(h.LimiterFallback))
	if sp := h.AuditSpace; sp != nil {
		gauge(descDiskFree, float64(sp.Free))
		gauge(descDiskLow, b2f(sp.Low))
	}
	for _, up := range c.upstreams() {
		if q, ok := h.Quotas[up]; ok && q.Requests > 0 {
			gauge(descQuotaUse, float64(q.InUse), up)
			gauge(descQuotaLeft, float64(max(0, q.Requests-q.InUse)), up)
		}
	}
	n := c.names.Load()
	for up, at := range h.CertExpiry {
		gauge(descCertExpiry, float64(at.Unix()), bounded(up, n.upstreams))
	}
	for iss, up := range h.Issuers {
		gauge(descIssuerUp, b2f(up), iss)
	}
	for _, up := range c.upstreams() {
		// Callers removed by a reload fold into "other": sum them.
		byCaller := map[string][2]int{}
		for _, u := range h.Shares[up] {
			caller := bounded(u.Caller, n.callers)
			if u.Caller == "" {
				caller = callers.AuthAnonymous
			}
			v := byCaller[caller]
			byCaller[caller] = [2]int{v[0] + u.Reserved, v[1] + u.Shared}
		}
		for caller, v := range byCaller {
			gauge(descShareUse, float64(v[0]), up, caller, "reserved")
			gauge(descShareUse, float64(v[1]), up, caller, "shared")
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// upstreams are the configured upstream names, sorted.
func (c *stateCollector) upstreams() []string {
	var out []string
	for u := range c.names.Load().upstreams {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}
