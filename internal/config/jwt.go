package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// checkJWTCallers checks every callers[].jwt: an issuer keybroker can
// reach (https, http only to loopback), an audience and a subject, claims
// by JSON Pointer, one key source; the same settings for each issuer
// across its callers; no two callers with the same issuer and subject.
func (c *Config) checkJWTCallers(e *errs) {
	type seen struct {
		path string
		jwt  JWT
	}
	byIssuer := map[string]seen{}
	bySubject := map[string]string{}
	for i := range c.Callers {
		j := c.Callers[i].JWT
		if j == nil {
			continue
		}
		p := fmt.Sprintf("callers[%d].jwt", i)
		if j.Issuer == "" {
			e.add(p+".issuer", "required: the issuer URL (the token's iss)")
		} else {
			checkUpstreamURL(e, p+".issuer", j.Issuer, "")
		}
		if j.Audience == "" {
			e.add(p+".audience", "required: the audience the tokens name (for Kubernetes, the projected token's audience)")
		}
		if j.Subject == "" && len(j.Claims) == 0 {
			e.add(p+".subject", "required, or claims: the token's sub (system:serviceaccount:NAMESPACE:NAME for Kubernetes), or claims its issuer sets (a Vault role's template)")
		}
		for ptr := range j.Claims {
			if !strings.HasPrefix(ptr, "/") {
				e.add(p+".claims", "%s is not a JSON Pointer: claims are keyed like \"/kubernetes.io/namespace\"", quote(ptr))
			}
		}
		switch {
		case j.JWKSURL != "" && j.JWKSFile != "":
			e.add(p, "set jwks_url or jwks_file, not both")
		case j.JWKSURL != "":
			checkUpstreamURL(e, p+".jwks_url", j.JWKSURL, "")
		case j.JWKSFile != "":
			checkReadable(e, p+".jwks_file", j.JWKSFile)
		}
		if j.CAFile != "" {
			checkReadable(e, p+".ca_file", j.CAFile)
		}
		if j.TokenFile != "" {
			checkReadable(e, p+".token_file", j.TokenFile)
		}
		if j.Leeway == nil {
			d := Duration(DefaultJWTLeeway)
			j.Leeway = &d
		} else if d := j.Leeway.D(); d < 0 || d > 5*time.Minute {
			e.add(p+".leeway", "must be between 0s and 5m")
		}
		defDur(&j.MaxLifetime, DefaultJWTMaxLifetime)
		if j.MaxLifetime.D() < time.Minute {
			e.add(p+".max_lifetime", "must be at least 1m")
		}
		if j.Issuer == "" {
			continue
		}
		key := issuerSettings(*j)
		if first, ok := byIssuer[j.Issuer]; ok && !reflect.DeepEqual(issuerSettings(first.jwt), key) {
			e.add(p, "its issuer's settings (jwks_url, jwks_file, ca_file, token_file, leeway, max_lifetime) differ from %s's: one issuer, one setting", first.path)
		} else if !ok {
			byIssuer[j.Issuer] = seen{p, *j}
		}
		// Without a subject, the claims are what tells callers apart.
		who := j.Issuer + "\x00" + j.Subject
		if j.Subject == "" {
			claims, _ := json.Marshal(j.Claims) // map keys sorted: canonical
			who += "\x00" + string(claims)
		}
		if other, dup := bySubject[who]; dup {
			e.add(p+".subject", "same issuer and subject (or claims) as %s: a token would name two callers", other)
		} else {
			bySubject[who] = p
		}
	}
}

// issuerSettings are the settings of a jwt block that belong to its
// issuer, not its caller.
func issuerSettings(j JWT) JWT {
	return JWT{Issuer: j.Issuer, JWKSURL: j.JWKSURL, JWKSFile: j.JWKSFile, CAFile: j.CAFile, TokenFile: j.TokenFile,
		Leeway: j.Leeway, MaxLifetime: j.MaxLifetime}
}
