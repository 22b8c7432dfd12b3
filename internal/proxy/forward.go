package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/reply"
)

// rewrite builds the vendor request. It runs after ReverseProxy removed
// hop-by-hop headers (including any the caller listed in Connection), so
// the credential set here always survives.
func (u *upstream) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In.Context())
	out := pr.Out
	t := u.spec.Target
	out.URL.Scheme = t.Scheme
	out.URL.Host = t.Host
	out.URL.Path = t.Path + c.rest
	out.URL.RawPath = ""
	out.URL.RawQuery = c.query
	out.Host = ""
	stripRequestHeaders(out.Header, u.stripHeaders)
	// Request trailers are never forwarded: a chunked body could otherwise
	// carry Authorization, Cookie or anything else stripped above.
	out.Trailer = nil
	out.Header.Set("X-Request-Id", c.id)
	if u.guard.RewritesBodies() {
		// The transport asks for gzip itself and decompresses it, so the
		// reply's links can be read and rewritten whatever the caller
		// accepts (a br or zstd reply could not be).
		out.Header.Del("Accept-Encoding")
	}
	for k, v := range u.spec.DefaultHeaders {
		if len(out.Header[k]) == 0 && (k != "Content-Type" || c.hasBody) {
			out.Header[k] = []string{v}
		}
	}
	u.spec.Auth.Inject(out, c.cred)
	c.sentAt = u.p.opts.Now()
	c.sent = true
}

// modifyResponse sees the vendor's reply before the caller does.
func (u *upstream) modifyResponse(resp *http.Response) error {
	c := callFrom(resp.Request.Context())
	c.reached = true
	c.rec.UpstreamMS = ms(u.p.opts.Now().Sub(c.sentAt))

	if resp.StatusCode == http.StatusUnauthorized && c.replayable {
		if err := u.retryWithNewCredential(resp, c); err != nil {
			return err
		}
	}
	// The vendor has counted the call (and its retry): the quota slot is
	// held from now until the window has passed.
	c.ticket.Release(true)
	if resp.StatusCode == http.StatusTooManyRequests {
		u.vendorThrottled(resp, c)
	}
	u.cleanReply(resp)
	if c.quota != nil {
		quotaHeaders(resp.Header, u.spec.Quota, c.rec.Caller, c.quota)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		u.refused.Store(u.p.opts.Now().UnixNano())
		u.refusedVersion.Store(int64(c.cred.Version))
		u.expiredWarning(resp, c)
	}
	return u.guard.Guard(resp, reply.Call{RequestID: c.id, Origin: reply.OriginOf(c.in), Leaks: u.leakValues(c.cred),
		Head: c.in.Method == http.MethodHead})
}

// expiredWarning marks a vendor 401 on a credential keybroker knows has
// expired: the vendor's reply passes unchanged, with a Keybroker-Warning
// header, and the audit record says the same.
func (u *upstream) expiredWarning(resp *http.Response, c *call) {
	x := c.cred.Expiry
	if x.At.IsZero() || u.p.opts.Now().Before(x.At) {
		return
	}
	msg := fmt.Sprintf("credential version %d expired at %s (from %s)", c.cred.Version, x.At.UTC().Format(time.RFC3339), x.From)
	resp.Header.Set(WarningHeader, msg)
	c.rec.Error = msg
}

// WarningHeader carries keybroker's note on a vendor reply it passes on
// unchanged.
const WarningHeader = "Keybroker-Warning"

// cleanReply keeps vendor session state and keybroker's own markers out of
// the caller's hands.
func (u *upstream) cleanReply(resp *http.Response) {
	h := resp.Header
	// A session cookie is a credential of its own: callers never get one.
	h.Del("Set-Cookie")
	// Only keybroker says Keybroker-Error or Keybroker-Warning.
	h.Del(ErrorHeader)
	h.Del(WarningHeader)
	// Keep keybroker's X-Request-Id the only one; the vendor's is kept
	// under another name for support tickets.
	if v := h.Values("X-Request-Id"); len(v) > 0 {
		h.Del("X-Request-Id")
		h["X-Vendor-Request-Id"] = v
	}
}

// vendorThrottled pauses the upstream after a vendor 429: for the vendor's
// Retry-After, else the preset's default (Huntress: a whole window), so no
// further call is sent into the wall. The caller's copy of the 429 gets a
// Retry-After if the vendor sent none.
func (u *upstream) vendorThrottled(resp *http.Response, c *call) {
	now := u.p.opts.Now()
	wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now)
	if !ok {
		wait = u.spec.VendorPause
		if wait <= 0 {
			wait = u.spec.Quota.Per
		}
		if wait <= 0 {
			wait = 5 * time.Second
		}
		resp.Header.Set("Retry-After", strconv.Itoa(max(1, ceilSeconds(wait))))
	}
	u.p.opts.UpstreamLimiter.Pause(u.limitKey, now.Add(wait))
	c.rec.Error = "vendor answered 429; upstream paused"
	u.p.opts.Log.Warn("vendor rate limit hit; pausing upstream",
		zap.String("upstream", u.spec.Name), zap.Duration("pause", wait))
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

// retryWithNewCredential handles a vendor 401: the credentials are told
// the credential the call carried was refused; if they have another (a
// rotated version, a renewed token), the request goes once more with it
// and the caller gets that reply.
func (u *upstream) retryWithNewCredential(resp *http.Response, c *call) error {
	ctx := resp.Request.Context()
	fresh, ok := u.p.opts.Credentials.Refused(ctx, u.spec.Name, c.cred)
	if !ok {
		return nil
	}
	req := resp.Request.Clone(ctx)
	if c.body != nil {
		req.Body = io.NopCloser(bytes.NewReader(c.body))
		req.ContentLength = int64(len(c.body))
	}
	u.spec.Auth.Inject(req, fresh)
	c.sentAt = u.p.opts.Now()
	// The retry is sent from inside ModifyResponse, so ReverseProxy's own
	// send path (and its hop-by-hop cleanup of the reply) does not run for
	// it: the transport is called directly, the reply's hop-by-hop headers
	// are removed here, and *resp is replaced in place by the new reply.
	next, err := u.trip.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	removeHopByHop(next.Header)
	*resp = *next
	c.cred = fresh
	c.rec.Credential = &audit.CredentialRef{Source: fresh.Source, Ref: fresh.Ref, Version: fresh.Version}
	c.rec.Retried = true
	c.rec.UpstreamMS = ms(u.p.opts.Now().Sub(c.sentAt))
	u.p.opts.Log.Info("vendor refused the credential; retried with the rotated one",
		zap.String("upstream", u.spec.Name), zap.Int("version", fresh.Version), zap.Int("status", next.StatusCode))
	return nil
}

var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, sf := range strings.Split(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// errorHandler turns a failed vendor call into the contract's reply.
func (u *upstream) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	c := callFrom(r.Context())
	// A call that could not even connect never reached the vendor; any
	// other failure may have been counted, so its slot is held.
	var eg *egress.Error
	c.ticket.Release(!errors.As(err, &eg) && !isDial(err))
	var tooBig *http.MaxBytesError
	var badEncoding *reply.EncodingError
	switch {
	case r.Context().Err() != nil:
		// outcome() records the call as cancelled.
		c.rec.Error = "caller went away"
		return
	case errors.As(err, &tooBig):
		fail(w, c, CodeBodyTooLarge, msgBodyTooLarge)
		return
	case c.bodyTimedOut.Load():
		fail(w, c, CodeBadRequest, msgBodyTimeout)
		return
	case errors.As(err, &badEncoding):
		u.logTransport(c, err)
		fail(w, c, CodeUpstreamUnreachable, badEncoding.Error())
	case errors.As(err, &eg):
		u.p.opts.Log.Warn("could not reach the vendor", zap.String("request_id", c.id), zap.String("upstream", u.spec.Name),
			zap.String("phase", eg.Phase), zap.String("reason", eg.Reason), zap.String("error", egress.Describe(eg.Err)))
		code := CodeUpstreamUnreachable
		if eg.Timeout {
			code = CodeUpstreamTimeout
		}
		fail(w, c, code, eg.Msg)
	case isDialOrTLS(err):
		u.logTransport(c, err)
		fail(w, c, CodeUpstreamUnreachable, "could not connect to upstream "+quoteName(u.spec.Name))
	case egress.IsTimeout(err):
		u.logTransport(c, err)
		fail(w, c, CodeUpstreamTimeout, "upstream "+quoteName(u.spec.Name)+" did not answer within "+u.spec.Timeout.String()+" (upstreams[].timeout)")
	default:
		u.logTransport(c, err)
		msg := "the connection to upstream " + quoteName(u.spec.Name) + " failed"
		if p := u.spec.Egress.Proxy; p != nil && u.spec.Target.Scheme == "https" {
			msg += " (it runs through the egress proxy " + p.Host + ")"
		}
		fail(w, c, CodeUpstreamUnreachable, msg)
	}
}

func (u *upstream) logTransport(c *call, err error) {
	u.p.opts.Log.Warn("vendor call failed", zap.String("request_id", c.id),
		zap.String("upstream", u.spec.Name), zap.String("error", egress.Describe(err)))
}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isDialOrTLS(err error) bool {
	if isDial(err) {
		return true
	}
	var rec tls.RecordHeaderError
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &rec) || errors.As(err, &alert) || errors.As(err, &verify) ||
		strings.Contains(err.Error(), "tls: ")
}
