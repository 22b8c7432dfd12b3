package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/budget"
	"github.com/keybroker/keybroker/internal/ratelimit"
)

// Refusals cost whoever provokes them nothing, so what they write to the
// audit is bounded (internal/budget). Requests refused before keybroker
// knows who sent them (no or an unknown key, a malformed request) are
// charged to their source address and to a total: beyond those limits a
// request gets 429 rate_limited and is only counted, in one
// unidentified_summary event per source per interval. A known caller's
// refusals (a path it may not use, over its own rate limit) are charged
// to its refusal budget: beyond it a refusal keeps its status (a 403 stays
// a 403: a 429 would only invite retries) and is counted in one
// refusal_summary event per caller per interval, by code and with the most
// refused paths. Calls a caller is allowed to make are always recorded:
// each of them reached a vendor.

// UnidentifiedLimits bound refusals of requests without a named caller.
// A zero Limit takes the default.
type UnidentifiedLimits struct {
	// PerSource is the limit per remote address (IPv6: per /64).
	// Default 60 per minute, 30 at once.
	PerSource ratelimit.Quota
	// Total is the limit over all sources. Default 600 per minute, 300 at
	// once.
	Total ratelimit.Quota
}

// Default refusal budgets.
var (
	DefaultUnidentifiedPerSource = ratelimit.Quota{Requests: 60, Per: time.Minute, Burst: 30}
	DefaultUnidentifiedTotal     = ratelimit.Quota{Requests: 600, Per: time.Minute, Burst: 300}
	DefaultRefusalsPerCaller     = ratelimit.Quota{Requests: 60, Per: time.Minute, Burst: 30}
)

// chargedToCaller reports whether a refusal with this code is the caller's
// doing (and so spends its budget): not a credential or audit outage.
func chargedToCaller(code string) bool {
	switch code {
	case CodeBadRequest, CodeCallerForbidden, CodeUnknownUpstream, CodeBodyTooLarge, CodeRateLimited:
		return true
	}
	return false
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

// overBudget charges the refusal of call c to its caller's budget, or to
// its source's when it has no named caller. Over the budget, the refusal
// has been answered (a keyless one with 429, a caller's as it would have
// been) and counted for the summary, and the call gets no record of its
// own.
func (p *Proxy) overBudget(w http.ResponseWriter, r *http.Request, c *call, st *state, ref *refusal) bool {
	if c.rec.Caller == "" {
		retry, over := p.chargeKeyless(r.Context(), r.RemoteAddr, st)
		if !over {
			return false
		}
		setRetryHeaders(w.Header(), retry, 0, 0, 0)
		fail(w, c, CodeRateLimited, msgKeylessOver)
		c.rec.RateLimitedBy = "unidentified"
		c.unrecorded = true
		return true
	}
	if !chargedToCaller(ref.code) {
		return false
	}
	caller := c.rec.Caller
	if _, over := p.refusals.Charge(r.Context(), caller, budget.Limits{Each: st.refusals}, budget.Refusal{Code: ref.code, Path: c.rec.Path}); !over {
		return false
	}
	fail(w, c, ref.code, ref.msg)
	c.unrecorded = true
	if p.opts.Hooks.RefusalUnrecorded != nil {
		p.opts.Hooks.RefusalUnrecorded(caller)
	}
	return true
}

// msgKeylessOver is the 429 of a keyless request over the limits.
const msgKeylessOver = "too many requests without a valid caller identity from this address; retry after Retry-After seconds"

// chargeKeyless charges a refusal without a named caller to the limits
// of its source address and in total; over them, it is counted for the
// summary, and retry says when to come back.
func (p *Proxy) chargeKeyless(ctx context.Context, remoteAddr string, st *state) (retry time.Duration, over bool) {
	return p.keyless.Charge(ctx, sourceOf(remoteAddr), budget.Limits{Each: st.unidentified.PerSource, Total: st.unidentified.Total}, budget.Refusal{})
}

// Run writes the summaries of unrecorded refusals, keyless ones every
// Options.SummaryInterval and known callers' (and the tokens issued) every
// Options.RefusalSummaryInterval, until ctx ends, and all once more then.
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
			p.FlushTokens()
		case <-ctx.Done():
			p.FlushSummary()
			p.FlushRefusals()
			p.FlushTokens()
			return nil
		}
	}
}

// FlushSummary writes one unidentified_summary event per source counted
// since the last flush.
func (p *Proxy) FlushSummary() {
	p.writeSummaries(p.keyless.Flush(), func(s budget.Summary) audit.Event {
		return audit.Event{Name: "unidentified_summary", RemoteAddr: s.Party, Count: s.Count,
			Detail: fmt.Sprintf("refused with 429 and not recorded one by one (over the limit for requests without a valid caller identity) since %s",
				s.Since.UTC().Format(time.RFC3339))}
	}, "requests without a caller identity over the limit were refused and summarised")
}

// FlushRefusals writes one refusal_summary event per caller counted since
// the last flush.
func (p *Proxy) FlushRefusals() {
	p.writeSummaries(p.refusals.Flush(), func(s budget.Summary) audit.Event {
		paths := make([]audit.PathCount, len(s.Paths))
		for i, pc := range s.Paths {
			paths[i] = audit.PathCount{Path: pc.Path, Count: pc.Count}
		}
		return audit.Event{Name: "refusal_summary", Caller: s.Party, Count: s.Count, Outcomes: s.Codes, Paths: paths,
			Detail: fmt.Sprintf("refused over the caller's refusal budget (server.refusals.per_caller) and not recorded one by one since %s",
				s.Since.UTC().Format(time.RFC3339))}
	}, "known callers' refusals over their budget were summarised")
}

// writeSummaries writes one event per summary, and one log line for all.
func (p *Proxy) writeSummaries(sums []budget.Summary, event func(budget.Summary) audit.Event, logMsg string) {
	if len(sums) == 0 {
		return
	}
	now := p.opts.Now()
	parties := make([]string, len(sums))
	var name string
	for i, s := range sums {
		ev := event(s)
		name, parties[i] = ev.Name, s.Party
		if err := p.opts.Auditor.WriteEvent(ev, now); err != nil {
			p.opts.Log.Error("audit summary not written", zap.String("event", ev.Name), zap.String("party", s.Party), zap.Error(err))
		}
	}
	p.opts.Log.Info(logMsg, zap.String("event", name), zap.Strings("parties", parties))
}
