package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/ratelimit"
	"github.com/keybroker/keybroker/internal/secrets"
)

// probeTimeout bounds a probe, whatever the upstream's timeout; probeWait
// bounds its wait for the vendor quota's next free slot.
const (
	probeTimeout = 10 * time.Second
	probeWait    = 10 * time.Second
)

// Probe asks the vendor whether cred works, with the upstream's probe
// request (Upstream.Probe): accepted on a 2xx, refused on 401 or 403,
// unknown otherwise (vendor down, timeout, another status); Unprovable
// for an upstream without one. It goes through the vendor's quota but
// never waits in line behind callers: it takes the next free slot ahead
// of them (ratelimit.Call.Ahead; with Redis, where there is no line, it
// tries like any call), and with none free within probeWait nothing is
// sent and it says Busy. It is audited as a call of caller "keybroker"
// (caller_auth internal). The second result says what happened, for
// events and logs; never a value. (An OAuth upstream's token endpoint
// judges first: internal/oauth's Credentials.Prove.)
func (p *Proxy) Probe(ctx context.Context, upstream string, cred secrets.Credential) (secrets.Proof, secrets.Verdict) {
	u := p.state.Load().upstreams[upstream]
	if u == nil || u.spec.Probe == nil {
		return secrets.Unprovable, secrets.Verdict{}
	}
	_, ticket, err := p.opts.UpstreamLimiter.Acquire(ctx, u.limitKey, u.spec.Quota, ratelimit.Call{Ahead: true, MaxWait: probeWait})
	if err != nil {
		return secrets.Busy, secrets.Verdict{Detail: "no quota slot free for the probe"}
	}
	start := p.opts.Now()
	id := p.requestID(&http.Request{Header: http.Header{}})
	pr := u.spec.Probe
	rec := audit.Record{Type: audit.TypeCall, Time: audit.Time(start), RequestID: id, Caller: callers.Internal,
		CallerAuth: callers.AuthInternal, Method: pr.Method, Upstream: upstream, Path: pr.Path, Policy: audit.PolicyAllowed,
		Credential: &audit.CredentialRef{Source: cred.Source, Ref: cred.Ref, Version: cred.Version}}
	// A probe reaches the vendor too: its begin line first. One that
	// cannot be written sends nothing, and the old version stays, as
	// when the quota has no slot.
	seq, err := p.opts.Auditor.Begin(&rec)
	if err != nil {
		ticket.Release(false)
		p.opts.Log.Error("credential probe not sent: audit trail cannot be written", zap.String("upstream", upstream), zap.Error(err))
		if seq != 0 {
			rec.BeginSeq, rec.Outcome, rec.Status, rec.Error = seq, audit.OutcomeFailed, http.StatusServiceUnavailable, "probe not sent: the audit trail cannot be written"
			_ = p.opts.Auditor.Write(&rec)
		}
		return secrets.Busy, secrets.Verdict{Detail: "probe not sent: the audit trail cannot be written"}
	}
	rec.BeginSeq = seq
	ctx, cancel := context.WithTimeout(ctx, min(probeTimeout, u.spec.Timeout))
	defer cancel()
	target := *u.spec.Target
	target.Path += pr.Path
	req, err := http.NewRequestWithContext(ctx, pr.Method, target.String(), nil)
	var resp *http.Response
	if err == nil {
		req.Header.Set("X-Request-Id", id)
		u.spec.Auth.Inject(req, cred)
		resp, err = u.trip.RoundTrip(req)
	}
	ticket.Release(true)
	rec.DurationMS = ms(p.opts.Now().Sub(start))
	rec.UpstreamMS = rec.DurationMS
	proof, detail, answered := secrets.Unknown, "", 0
	if err != nil {
		rec.Outcome, rec.Status = audit.OutcomeFailed, http.StatusBadGateway
		detail = "probe " + pr.Method + " " + pr.Path + " failed: " + probeError(err)
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		rec.Outcome, rec.Status, answered = audit.OutcomeForwarded, resp.StatusCode, resp.StatusCode
		detail = "probe " + pr.Method + " " + pr.Path + " answered " + strconv.Itoa(resp.StatusCode)
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			proof = secrets.Accepted
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			proof = secrets.Refused
		case resp.StatusCode == http.StatusTooManyRequests:
			proof = secrets.Busy
		}
	}
	rec.Error = detail
	if err := p.opts.Auditor.Write(&rec); err != nil {
		p.opts.Log.Error("audit record of a credential probe not written", zap.String("upstream", upstream), zap.Error(err))
	}
	return proof, secrets.Verdict{Status: answered, Detail: fmt.Sprintf("version %d: %s", cred.Version, detail)}
}

// probeError names a failed probe without its transport details.
func probeError(err error) string {
	if egress.IsTimeout(err) {
		return "timed out"
	}
	return "could not reach the vendor"
}
