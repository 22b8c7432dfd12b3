package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/keybroker/keybroker/internal/egress"
	"golang.org/x/oauth2"
)

// classify names a failed token request by what the token endpoint did.
func (v *VendorTokens) classify(err error) *FetchError {
	where := "the token endpoint " + v.endpoint() + " of upstream " + strconv.Quote(v.cfg.Upstream)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		// The vendor's error code only where RFC 6749 names it; its
		// error_description never: either could carry anything, a client
		// secret echoed back among them.
		code := knownCode(re.ErrorCode)
		switch {
		case code == "invalid_client" || code == "unauthorized_client" || status == http.StatusUnauthorized:
			return &FetchError{Kind: Refused, Status: status, Code: code, Client: true,
				Msg: "the vendor refused the client credentials: " + where + " answered " + answer(status, code)}
		case status >= 400 && status < 500:
			return &FetchError{Kind: Refused, Status: status, Code: code,
				Msg: where + " refused the token request: " + answer(status, code)}
		default:
			return &FetchError{Kind: Failed, Status: status, Code: code, Msg: where + " answered " + answer(status, code)}
		}
	}
	var eg *egress.Error
	switch {
	case errors.As(err, &eg) && eg.Timeout, egress.IsTimeout(err), errors.Is(err, context.DeadlineExceeded):
		return &FetchError{Kind: Timeout, Msg: where + " did not answer within " + v.cfg.Timeout.String()}
	case errors.As(err, &eg):
		return &FetchError{Kind: Unreachable, Msg: where + " could not be reached (" + eg.Phase + ")"}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return &FetchError{Kind: Unreachable, Msg: where + " could not be reached"}
	}
	// The library's complaints about a reply it could not use, in fixed
	// words (its own text may quote the reply).
	return &FetchError{Kind: Failed, Msg: where + " gave no usable token (" + libReason(err) + ")"}
}

// rfc6749Codes are the error codes of RFC 6749 §5.2.
var rfc6749Codes = map[string]bool{"invalid_request": true, "invalid_client": true, "invalid_grant": true,
	"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true}

// knownCode is a token endpoint's error code as keybroker repeats it: one
// of RFC 6749 §5.2's, "" for none, "other" for anything else.
func knownCode(code string) string {
	if code == "" || rfc6749Codes[code] {
		return code
	}
	return "other"
}

// libReason names what x/oauth2 found wrong with a token reply.
func libReason(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "missing access_token"):
		return "no access_token in the reply"
	case strings.Contains(s, "cannot parse"):
		return "a reply that does not parse"
	case strings.Contains(s, "cannot fetch token"):
		return "the token request failed"
	}
	return "an unusable reply"
}
