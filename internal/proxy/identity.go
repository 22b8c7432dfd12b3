package proxy

import (
	"context"
	"errors"
	"strings"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/jwtauth"
	"github.com/keybroker/keybroker/internal/oauth"
)

// Who a caller is, is callers' business (callers.Registry.Identify, one
// order of proofs). The proxy hands it the verifiers of the running
// configuration, adapted here to the interfaces callers declares.

// verifiers are the token verifiers callers.Identify uses: keybroker's own
// tokens always, platform JWTs when a JWT caller is configured.
func (p *Proxy) verifiers(jwt *jwtauth.Verifier) callers.Verifiers {
	v := callers.Verifiers{Tokens: tokenVerifier{p.opts.Issuer}}
	if jwt != nil {
		v.JWT = jwtVerifier{jwt}
	}
	return v
}

// tokenVerifier is callers.TokenVerifier over keybroker's token issuer.
type tokenVerifier struct{ is *oauth.Issuer }

func (tokenVerifier) IsToken(v string) bool { return strings.HasPrefix(v, oauth.TokenPrefix) }

func (t tokenVerifier) VerifyToken(ctx context.Context, tok string) (callers.TokenClaims, error) {
	cl, err := t.is.Verify(ctx, tok)
	if err != nil {
		return callers.TokenClaims{}, err
	}
	return callers.TokenClaims{Caller: cl.Caller, Upstream: cl.Upstream, Fingerprint: cl.Fingerprint}, nil
}

func (tokenVerifier) Fingerprint(keySHA256 []byte) string { return oauth.Fingerprint(keySHA256) }

// jwtVerifier is callers.JWTVerifier over the JWT issuers' keys.
type jwtVerifier struct{ v *jwtauth.Verifier }

func (jwtVerifier) IsJWT(v string) bool { return jwtauth.LooksLikeJWT(v) }

func (j jwtVerifier) VerifyJWT(ctx context.Context, tok string) (callers.VerifiedToken, error) {
	cl, err := j.v.Verify(ctx, tok)
	if err != nil {
		var je *jwtauth.Error
		if errors.As(err, &je) && je.Unavailable {
			return callers.VerifiedToken{}, &callers.UnavailableError{Reason: je.Reason}
		}
		return callers.VerifiedToken{}, err
	}
	return callers.VerifiedToken{Issuer: cl.Issuer, Subject: cl.Subject, Audience: cl.Audience, Claims: cl.Raw}, nil
}
