// Package metrics exports keybroker's Prometheus metrics: per-call counters
// and histograms fed by the proxy's Observer hook, and state read at scrape
// time (credentials, Vault token, audit trail, limiter backend). It owns its
// registry (no global one) and keeps every label bounded: upstream and
// caller labels only take configured names, anything else is "other".
// No metric carries a secret, a path or a query.
package metrics

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/secrets"
)

// State is where scrape-time values come from: one snapshot of
// keybroker's health a scrape (the one /readyz renders), for the
// upstreams the metrics know. Nil: no state metrics.
type State struct {
	Health func(upstreams []string) Health
}

// Health is keybroker's state at one moment, as the metrics export it.
// Nil parts are not exported.
type Health struct {
	// Credentials are the upstreams' credentials (not the audit signing
	// key's: that is Signing).
	Credentials []secrets.Status
	// Vault is keybroker's Vault login; nil when the running
	// configuration does not use Vault.
	Vault *VaultLogin
	// AuditWritten and AuditFailed count records written and write
	// failures.
	AuditWritten, AuditFailed int64
	// LimiterFallback: Redis is unreachable and quotas are kept locally.
	LimiterFallback bool
	// AuditSpace is the audit filesystem's free space; nil for stdout.
	AuditSpace *AuditSpace
	// Quotas are the upstream quotas' use, by upstream (those with a
	// quota only).
	Quotas map[string]QuotaUse
	// Shares are, for upstreams whose quota has rate_limit.shares, the
	// slots each caller holds, by class.
	Shares map[string][]ShareUse
	// CertExpiry is when each upstream's certificate expires, as last
	// seen in a TLS handshake.
	CertExpiry map[string]time.Time
	// Issuers are the JWT issuers and whether their keys are held.
	Issuers map[string]bool
	// Signing is the audit signing key's state; nil without
	// audit.signing.
	Signing *Signing
}

// VaultLogin is keybroker's Vault token: whether it holds one and when
// it expires (zero: it does not).
type VaultLogin struct {
	LoggedIn bool
	Expiry   time.Time
}

// AuditSpace is the free space on the audit file's filesystem and whether
// it is below audit.min_free_bytes.
type AuditSpace struct {
	Free uint64
	Low  bool
}

// QuotaUse is an upstream quota's calls holding a slot, and its size.
type QuotaUse struct{ InUse, Requests int }

// Signing is the audit signing key's state: whether it is loaded, and how
// old the oldest record no checkpoint covers is.
type Signing struct {
	Loaded         bool
	OldestUnsigned time.Duration
}

// ShareUse is one caller's slots of a shared upstream quota, by class.
type ShareUse struct {
	Caller           string
	Reserved, Shared int
}

// Metrics is the registry and the collectors.
type Metrics struct {
	reg *prometheus.Registry
	// own are keybroker's collectors (not Go's or the process's).
	own   []prometheus.Collector
	names atomic.Pointer[names]

	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	upstreamTime  *prometheus.HistogramVec
	waits         *prometheus.HistogramVec
	refusals      *prometheus.CounterVec
	vendor429     *prometheus.CounterVec
	inflight      prometheus.Gauge
	refreshErrors *prometheus.CounterVec
	tlsFailures   *prometheus.CounterVec
	linksDropped  *prometheus.CounterVec
	unrecorded    *prometheus.CounterVec
	tokenFetches  *prometheus.CounterVec
	tokenRequests *prometheus.CounterVec
	callerWaits   *prometheus.HistogramVec
	issuerLoads   *prometheus.CounterVec
	callerRefused *prometheus.CounterVec
	// requestSeries caches keybroker_requests_total's children by
	// requestKey (bounded: every label takes configured names or a
	// fixed set), copied on the rare write so that a call only reads.
	requestSeries atomic.Pointer[map[requestKey]prometheus.Counter]
	seriesMu      sync.Mutex
	// other is the series of upstreams not configured, made when first
	// seen.
	other atomic.Pointer[upstreamSeries]
}

type names struct {
	upstreams map[string]bool
	callers   map[string]bool
	// children are each configured upstream's series, resolved once per
	// configuration rather than per call ("other" is Metrics.other).
	children map[string]*upstreamSeries
}

// upstreamSeries are an upstream's per-call series.
type upstreamSeries struct {
	duration, upstreamTime, waits prometheus.Observer
	vendor429                     prometheus.Counter
}

// requestKey is one keybroker_requests_total series.
type requestKey struct{ upstream, caller, class, outcome, tier string }

// New registers every metric. upstreams and callers are the configured
// names (SetNames changes them on reload).
func New(upstreams, callers []string, st State) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_requests_total",
		Help: "Calls by upstream, caller, status class, outcome and the operation's risk tier (read, respond, admin; empty: undocumented or no catalogue)."},
		[]string{"upstream", "caller", "status_class", "outcome", "tier"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keybroker_request_duration_seconds",
		Help: "Whole call duration, as the caller sees it.", Buckets: buckets}, []string{"upstream"})
	m.upstreamTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keybroker_upstream_duration_seconds",
		Help: "Time to the vendor's response headers.", Buckets: buckets}, []string{"upstream"})
	m.waits = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keybroker_ratelimit_wait_seconds",
		Help: "Time calls waited for a rate-limit slot.", Buckets: []float64{0, .01, .1, .5, 1, 2, 5, 10}}, []string{"upstream"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_ratelimit_refusals_total",
		Help: "Calls refused with 429 by keybroker, by the limit that refused (caller or upstream)."}, []string{"upstream", "by"})
	m.vendor429 = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_vendor_429_total",
		Help: "429 answers from vendors (each pauses the upstream)."}, []string{"upstream"})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "keybroker_inflight_requests", Help: "Calls in progress."})
	m.refreshErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_credential_refresh_errors_total",
		Help: "Failed credential reads from their source."}, []string{"upstream"})
	m.tlsFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_tls_handshake_failures_total",
		Help: "Failed TLS handshakes with vendors, by upstream and reason (unknown_authority, expired, name_mismatch, timeout, ...)."}, []string{"upstream", "reason"})
	m.linksDropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_links_dropped_total",
		Help: "JSON link fields replaced by null because they pointed away from the upstream."}, []string{"upstream"})
	m.unrecorded = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_refusals_unrecorded_total",
		Help: "Refusals of known callers over their refusal budget: counted in refusal_summary events, not recorded one by one."}, []string{"caller"})
	m.tokenFetches = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_oauth_token_fetches_total",
		Help: "Vendor token requests of OAuth upstreams, by reason (first, refresh, renew, prove) and result (ok, refused, failed, unreachable, timeout)."},
		[]string{"upstream", "reason", "result"})
	m.tokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_oauth_token_requests_total",
		Help: "Requests to keybroker's own token endpoint, by upstream and outcome (issued, or the OAuth error)."},
		[]string{"upstream", "outcome"})
	m.callerWaits = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keybroker_ratelimit_caller_wait_seconds",
		Help: "Time calls that waited for an upstream quota slot waited, by upstream and caller.", Buckets: []float64{.01, .1, .5, 1, 2, 5, 10}},
		[]string{"upstream", "caller"})
	m.callerRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_ratelimit_caller_refusals_total",
		Help: "Calls refused with 429 by keybroker, by upstream, caller and the limit that refused (caller, upstream, share)."},
		[]string{"upstream", "caller", "by"})
	m.issuerLoads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybroker_jwt_issuer_key_loads_total",
		Help: "Loads of JWT issuers' key sets (discovery, JWKS URL or file), by issuer and result (ok, failed)."},
		[]string{"issuer", "result"})
	m.own = []prometheus.Collector{m.issuerLoads, m.callerWaits, m.callerRefused, m.tokenFetches, m.tokenRequests, m.unrecorded, m.linksDropped, m.tlsFailures, m.requests, m.duration, m.upstreamTime, m.waits, m.refusals, m.vendor429, m.inflight, m.refreshErrors,
		&stateCollector{st: st, names: &m.names}}
	m.reg.MustRegister(m.own...)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.SetNames(upstreams, callers)
	return m
}

// SetNames replaces the configured upstream and caller names.
func (m *Metrics) SetNames(upstreams, callers []string) {
	n := &names{upstreams: map[string]bool{}, callers: map[string]bool{}}
	for _, u := range upstreams {
		n.upstreams[u] = true
	}
	for _, c := range callers {
		n.callers[c] = true
	}
	n.children = map[string]*upstreamSeries{}
	for _, u := range upstreams {
		n.children[u] = m.seriesOf(u)
	}
	m.names.Store(n)
	m.precreate(upstreams, callers)
}

// precreate exports, at zero, the series the shipped alerts and dashboard
// read, for the configured names and the fixed reason vocabularies: a
// panel shows 0 rather than "No data", and the first TLS failure is an
// increase an alert sees. Never a caller × tier product.
func (m *Metrics) precreate(upstreams, callers []string) {
	for _, u := range upstreams {
		for _, r := range egress.TLSFailureReasons {
			m.tlsFailures.WithLabelValues(u, r)
		}
		for _, by := range []string{"caller", "upstream", "share"} {
			m.refusals.WithLabelValues(u, by)
		}
		for _, c := range callers {
			m.requestCounter(requestKey{u, c, "2xx", audit.OutcomeForwarded, ""})
		}
	}
	for _, c := range callers {
		m.unrecorded.WithLabelValues(c)
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// CallStarted counts a call in flight.
func (m *Metrics) CallStarted() { m.inflight.Inc() }

// CallFinished records a finished call from its audit record.
func (m *Metrics) CallFinished(rec *audit.Record) {
	m.inflight.Dec()
	n := m.names.Load()
	up := bounded(rec.Upstream, n.upstreams)
	caller := rec.Caller
	switch {
	case caller == "" && rec.CallerAuth == callers.AuthAnonymous:
		caller = callers.AuthAnonymous
	case caller == "":
		caller = "none"
	default:
		caller = bounded(caller, n.callers)
	}
	m.requestCounter(requestKey{up, caller, statusClass(rec.Status), rec.Outcome, tierLabel(rec.Tier)}).Inc()
	series := n.children[up]
	if series == nil { // "other": exported once a call for it was seen
		if series = m.other.Load(); series == nil {
			series = m.seriesOf(up)
			m.other.Store(series)
		}
	}
	series.duration.Observe(rec.DurationMS / 1000)
	if rec.Outcome == audit.OutcomeForwarded {
		series.upstreamTime.Observe(rec.UpstreamMS / 1000)
		if rec.Status == http.StatusTooManyRequests {
			series.vendor429.Inc()
		}
	}
	if rec.RateLimitWaitMS > 0 || rec.Outcome == audit.OutcomeForwarded {
		series.waits.Observe(rec.RateLimitWaitMS / 1000)
	}
	if rec.RateLimitWaitMS > 0 {
		m.callerWaits.WithLabelValues(up, caller).Observe(rec.RateLimitWaitMS / 1000)
	}
	if rec.RateLimitedBy != "" && rec.Outcome == audit.OutcomeRefused {
		m.refusals.WithLabelValues(up, rec.RateLimitedBy).Inc()
		m.callerRefused.WithLabelValues(up, caller, rec.RateLimitedBy).Inc()
	}
}

func (m *Metrics) seriesOf(upstream string) *upstreamSeries {
	return &upstreamSeries{
		duration:     m.duration.WithLabelValues(upstream),
		upstreamTime: m.upstreamTime.WithLabelValues(upstream),
		waits:        m.waits.WithLabelValues(upstream),
		vendor429:    m.vendor429.WithLabelValues(upstream),
	}
}

// tierLabel bounds the tier label to its three values and empty.
func tierLabel(t string) string {
	switch t {
	case "read", "respond", "admin":
		return t
	}
	return ""
}

// requestCounter returns the requests_total series for k.
func (m *Metrics) requestCounter(k requestKey) prometheus.Counter {
	if cur := m.requestSeries.Load(); cur != nil {
		if c, ok := (*cur)[k]; ok {
			return c
		}
	}
	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	next := map[requestKey]prometheus.Counter{}
	if cur := m.requestSeries.Load(); cur != nil {
		for key, c := range *cur {
			next[key] = c
		}
	}
	c := m.requests.WithLabelValues(k.upstream, k.caller, k.class, k.outcome, k.tier)
	next[k] = c
	m.requestSeries.Store(&next)
	return c
}

// CredentialEvent counts refresh failures (secrets.Options.OnEvent).
func (m *Metrics) CredentialEvent(ev secrets.Event) {
	if ev.Type == secrets.EventRefreshFailed {
		m.refreshErrors.WithLabelValues(bounded(ev.Upstream, m.names.Load().upstreams)).Inc()
	}
}

func bounded(v string, known map[string]bool) string {
	if known[v] {
		return v
	}
	return "other"
}

var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func statusClass(s int) string {
	if s < 100 || s > 599 {
		return "other"
	}
	return classes[s/100-1]
}

// Names lists every metric keybroker exports, from its collectors'
// descriptions (not a scrape: a vector with no labels yet exports nothing).
func (m *Metrics) Names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range m.own {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for d := range ch {
		s := d.String() // Desc{fqName: "name", help: ...}
		if i := strings.Index(s, `fqName: "`); i >= 0 {
			rest := s[i+len(`fqName: "`):]
			out = append(out, rest[:strings.IndexByte(rest, '"')])
		}
	}
	return out
}

// RefusalUnrecorded counts a known caller's refusal over its budget.
func (m *Metrics) RefusalUnrecorded(caller string) {
	m.unrecorded.WithLabelValues(bounded(caller, m.names.Load().callers)).Inc()
}

// LinkDropped counts a JSON link field the reply guard replaced by null.
func (m *Metrics) LinkDropped(upstream string) {
	m.linksDropped.WithLabelValues(bounded(upstream, m.names.Load().upstreams)).Inc()
}

// TLSHandshakeFailed counts a failed TLS handshake with a vendor.
func (m *Metrics) TLSHandshakeFailed(upstream, reason string) {
	m.tlsFailures.WithLabelValues(bounded(upstream, m.names.Load().upstreams), reason).Inc()
}

// VendorTokenFetched counts a vendor token request of an OAuth upstream.
func (m *Metrics) VendorTokenFetched(upstream, reason, result string) {
	m.tokenFetches.WithLabelValues(bounded(upstream, m.names.Load().upstreams), reason, result).Inc()
}

// TokenRequested counts a request to keybroker's own token endpoint.
func (m *Metrics) TokenRequested(upstream, outcome string) {
	m.tokenRequests.WithLabelValues(bounded(upstream, m.names.Load().upstreams), outcome).Inc()
}

// IssuerKeysLoaded counts a load of a JWT issuer's key set. The issuer is
// a configured one (callers[].jwt.issuer): bounded.
func (m *Metrics) IssuerKeysLoaded(issuer, result string) {
	m.issuerLoads.WithLabelValues(issuer, result).Inc()
}
