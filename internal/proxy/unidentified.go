package proxy

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

// Requests that keybroker refuses before it knows who sent them (no or an
// unknown key, a malformed request) cost whoever sends them nothing, so
// they are limited per source address and in total. Within the limits each
// gets its own audit record; beyond them a request gets 429 rate_limited
// and is only counted, and the counts are written as one
// unidentified_summary event per source per summary interval. The audit
// trail therefore grows by a bounded amount whatever a keyless client
// sends, and cannot be used to fill the disk that callers with keys need.

// UnidentifiedLimits bound refusals of requests without a named caller.
// A zero Limit takes the default.
type UnidentifiedLimits struct {
	// PerSource is the limit per remote address (IPv6: per /64).
	// Default 60 per minute, 30 at once.
	PerSource ratelimit.Limit
	// Total is the limit over all sources. Default 600 per minute, 300 at
	// once.
	Total ratelimit.Limit
}

// Default unidentified limits.
var (
	DefaultUnidentifiedPerSource = ratelimit.Limit{Requests: 60, Per: time.Minute, Burst: 30}
	DefaultUnidentifiedTotal     = ratelimit.Limit{Requests: 600, Per: time.Minute, Burst: 300}
)

// maxSummarySources bounds the sources counted one by one in a summary
// interval; the rest are counted together as "other".
const maxSummarySources = 1000

// summary counts unrecorded refusals per source until the next flush.
type summary struct {
	mu     sync.Mutex
	since  time.Time
	counts map[string]int64
}

func (s *summary) add(source string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts == nil {
		s.counts = map[string]int64{}
		s.since = now
	}
	if _, ok := s.counts[source]; !ok && len(s.counts) >= maxSummarySources {
		source = "other"
	}
	s.counts[source]++
}

func (s *summary) take() (map[string]int64, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, since := s.counts, s.since
	s.counts = nil
	return c, since
}

// sourceOf is the key a remote address is limited under: its IP, or its
// /64 for IPv6 (one host can hold a whole /64).
func sourceOf(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.String()
	default:
		return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
	}
}

// overUnidentified reports whether a refusal of a call without a named
// caller is over the limits. If so it has answered 429 and counted the
// call for the summary, and the call gets no record of its own.
func (p *Proxy) overUnidentified(w http.ResponseWriter, r *http.Request, c *call, st *state) bool {
	retry, over := p.unidentifiedOver(r, st)
	if !over {
		return false
	}
	setRetryHeaders(w.Header(), retry, 0, 0, 0)
	fail(w, c, CodeRateLimited, "too many requests without a valid caller identity from this address; retry after Retry-After seconds")
	c.rec.RateLimitedBy = "unidentified"
	c.unrecorded = true
	return true
}

// unidentifiedOver charges a refusal without a named caller to the
// limits of its source and in total. Over them, it is counted for the
// summary, and retry says when to come back.
func (p *Proxy) unidentifiedOver(r *http.Request, st *state) (retry time.Duration, over bool) {
	src := sourceOf(r.RemoteAddr)
	steps := [...]struct {
		key string
		lim ratelimit.Limit
	}{{"unidentified:" + src, st.unidentified.PerSource}, {"unidentified:*", st.unidentified.Total}}
	for _, s := range steps {
		_, err := p.gate.Wait(r.Context(), s.key, s.lim)
		if err == nil {
			continue
		}
		retry := time.Second
		if ref, ok := ratelimit.IsRefused(err); ok {
			retry = ref.RetryAfter
		}
		p.summary.add(src, p.opts.Now())
		return retry, true
	}
	return 0, false
}

// Run writes the summaries of unrecorded refusals, keyless ones every
// Options.SummaryInterval and known callers' every
// Options.RefusalSummaryInterval, until ctx ends, and both once more then.
func (p *Proxy) Run(ctx context.Context) error {
	t := time.NewTicker(p.opts.SummaryInterval)
	defer t.Stop()
	rt := time.NewTicker(p.opts.RefusalSummaryInterval)
	defer rt.Stop()
	for {
		select {
		case <-t.C:
			p.FlushSummary()
		case <-rt.C:
			p.FlushRefusals()
		case <-ctx.Done():
			p.FlushSummary()
			p.FlushRefusals()
			return nil
		}
	}
}

// FlushSummary writes one unidentified_summary event per source counted
// since the last flush.
func (p *Proxy) FlushSummary() {
	counts, since := p.summary.take()
	if len(counts) == 0 {
		return
	}
	now := p.opts.Now()
	srcs := slices.Sorted(maps.Keys(counts))
	for _, s := range srcs {
		ev := audit.Event{Name: "unidentified_summary", RemoteAddr: s, Count: counts[s],
			Detail: fmt.Sprintf("refused with 429 and not recorded one by one (over the limit for requests without a valid caller identity) since %s",
				since.UTC().Format(time.RFC3339))}
		if err := p.opts.Auditor.WriteEvent(ev, now); err != nil {
			p.opts.Log.Error("audit summary not written", zap.String("remote_addr", s), zap.Error(err))
		}
	}
	p.opts.Log.Warn("requests without a caller identity over the limit were refused and summarised",
		zap.Int("sources", len(srcs)))
}
