package proxy

import (
	"context"
	"errors"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/jwtauth"
)

// Who a caller is, is callers' business (callers.Registry.Identify, one
// order of proofs). The proxy hands it the verifiers of the running
// configuration, adapted here to the interfaces callers declares.

// verifiers are the token verifiers callers.Identify uses: keybroker's own
// tokens always, platform JWTs when a JWT caller is configured.
func (p *Proxy) verifiers(jwt *jwtauth.Verifier) callers.Verifiers {
	v := callers.Verifiers{Tokens: tokenVerifier{p.opts.Tokens}}
	if jwt != nil {
		v.JWT = jwtVerifier{jwt}
	}
	return v
}

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
