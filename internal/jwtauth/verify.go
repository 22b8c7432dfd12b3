// Package jwtauth verifies the signed identities callers' platforms give
// them (Kubernetes service-account tokens, Vault identity tokens, any
// OIDC issuer's JWTs): the signature with the issuer's keys (RS256, ES256
// or EdDSA; never none, never HS*), iss, aud, exp (required, its life
// capped) and nbf with a small leeway. It keeps each issuer's keys fresh
// in the background and caches verified tokens until they expire. Which
// caller a verified token is, is the callers package's business.
package jwtauth

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"
)

// Algorithms are the signature algorithms accepted.
var Algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

// Defaults of IssuerConfig.
const (
	DefaultLeeway      = 30 * time.Second
	DefaultMaxLifetime = 24 * time.Hour
	cacheSize          = 10000
)

// Error is why a token identifies nobody: Reason is for the caller (the
// token's own public facts); Unavailable means the issuer's keys cannot be
// had (503, not 401).
type Error struct {
	Reason      string
	Unavailable bool
}

func (e *Error) Error() string { return e.Reason }

func refused(reason string) *Error { return &Error{Reason: "token refused: " + reason} }

// Claims are a verified token's: the standard ones and the whole payload
// (for claims matched by JSON Pointer).
type Claims struct {
	Issuer   string
	Subject  string
	Audience []string
	Expiry   time.Time
	Raw      map[string]any
}

// Options tune a Verifier.
type Options struct {
	Log *zap.Logger
	Now func() time.Time
	// OnLoad, when set, is told of every key set load (issuer, ok/failed).
	OnLoad func(issuer, result string)
}

// Verifier verifies tokens of the configured issuers.
type Verifier struct {
	issuers map[string]*issuer
	opts    Options

	mu    sync.Mutex
	cache map[[32]byte]*list.Element
	lru   *list.List
}

type issuer struct {
	cfg  IssuerConfig
	keys *keySet
}

type cached struct {
	sum    [32]byte
	claims Claims
	exp    time.Time
}

// New returns a verifier of cfgs' issuers and starts fetching their keys
// in the background. Issuers of prev with the same configuration are
// taken over with their keys (a reload); Close(prev) then stops the rest.
func New(cfgs []IssuerConfig, opts Options, prev *Verifier) *Verifier {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	v := &Verifier{issuers: map[string]*issuer{}, opts: opts, cache: map[[32]byte]*list.Element{}, lru: list.New()}
	for _, c := range cfgs {
		if c.Leeway <= 0 {
			c.Leeway = DefaultLeeway
		}
		if c.MaxLifetime <= 0 {
			c.MaxLifetime = DefaultMaxLifetime
		}
		if prev != nil {
			if old := prev.issuers[c.Issuer]; old != nil && old.cfg.same(c) {
				v.issuers[c.Issuer] = old
				continue
			}
		}
		ks := newKeySet(c, opts.Log, opts.Now, opts.OnLoad)
		ks.start()
		v.issuers[c.Issuer] = &issuer{cfg: c, keys: ks}
	}
	return v
}

// Close stops the key refreshes of v's issuers that next does not use.
func (v *Verifier) Close(next *Verifier) {
	if v == nil {
		return
	}
	for name, is := range v.issuers {
		if next != nil && next.issuers[name] == is {
			continue
		}
		is.keys.close()
	}
}

// RereadFiles reads every jwks_file again now.
func (v *Verifier) RereadFiles(ctx context.Context) {
	if v == nil {
		return
	}
	for _, is := range v.issuers {
		if is.cfg.JWKSFile != "" {
			_ = is.keys.fetch(ctx)
		}
	}
}

// Issuers are the issuers' key states, for /readyz and metrics.
func (v *Verifier) Issuers() []IssuerStatus {
	if v == nil {
		return nil
	}
	var out []IssuerStatus
	for _, is := range v.issuers {
		out = append(out, is.keys.status())
	}
	return out
}

// LooksLikeJWT reports whether s has a JWS compact form whose header is
// JSON: what tells a token from a caller key.
func LooksLikeJWT(s string) bool {
	return strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2 && len(s) < 16<<10
}

// Verify checks tok and returns its claims, or why it identifies nobody.
func (v *Verifier) Verify(ctx context.Context, tok string) (Claims, error) {
	if v == nil || len(v.issuers) == 0 {
		return Claims{}, refused("no token issuer is configured")
	}
	now := v.opts.Now()
	sum := sha256.Sum256([]byte(tok))
	if c, ok := v.cached(sum, now); ok {
		return c, nil
	}
	parsed, err := jwt.ParseSigned(tok, Algorithms)
	if err != nil {
		return Claims{}, refused(parseReason(tok, err))
	}
	// The issuer is read before the signature is checked only to find
	// its keys: nothing is trusted until they verify it.
	var unverified jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return Claims{}, refused("malformed claims")
	}
	is := v.issuers[unverified.Issuer]
	if is == nil {
		return Claims{}, refused("unknown issuer")
	}
	kid := parsed.Headers[0].KeyID
	keys, err := is.keys.key(ctx, kid)
	if err != nil {
		return Claims{}, err
	}
	var std jwt.Claims
	raw := map[string]any{}
	verified := false
	for _, k := range keys {
		if err := parsed.Claims(k.Key, &std, &raw); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		if len(keys) == 0 {
			return Claims{}, refused("bad signature (no key of the issuer has this kid)")
		}
		return Claims{}, refused("bad signature")
	}
	if std.Expiry == nil {
		return Claims{}, refused("no exp: tokens that never expire are not accepted")
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: is.cfg.Issuer, AnyAudience: is.cfg.Audiences, Time: now}, is.cfg.Leeway); err != nil {
		return Claims{}, refused(validationReason(err))
	}
	exp := std.Expiry.Time()
	from := now
	if std.IssuedAt != nil {
		from = std.IssuedAt.Time()
	}
	if exp.Sub(from) > is.cfg.MaxLifetime {
		return Claims{}, refused("lives longer than " + is.cfg.MaxLifetime.String() + " (max_lifetime)")
	}
	c := Claims{Issuer: std.Issuer, Subject: std.Subject, Audience: std.Audience, Expiry: exp, Raw: raw}
	v.store(sum, c, exp.Add(is.cfg.Leeway))
	return c, nil
}

func parseReason(tok string, err error) string {
	// An alg outside the allowed ones is the usual attack: say so.
	if head, _, ok := strings.Cut(tok, "."); ok {
		if b, derr := base64.RawURLEncoding.DecodeString(head); derr == nil && strings.Contains(string(b), `"alg"`) {
			var h struct {
				Alg string `json:"alg"`
			}
			if json.Unmarshal(b, &h) == nil && h.Alg != "" && !allowed(h.Alg) {
				return "algorithm " + strconv.Quote(h.Alg) + " is not accepted (RS256, ES256, EdDSA)"
			}
		}
	}
	return "malformed token"
}

func allowed(alg string) bool {
	for _, a := range Algorithms {
		if string(a) == alg {
			return true
		}
	}
	return false
}

func validationReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return "expired"
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return "not yet valid"
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return "unknown issuer"
	case errors.Is(err, jwt.ErrInvalidAudience):
		return "wrong audience"
	}
	return "invalid claims"
}

func (v *Verifier) cached(sum [32]byte, now time.Time) (Claims, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.cache[sum]
	if !ok {
		return Claims{}, false
	}
	c := e.Value.(*cached)
	if !now.Before(c.exp) {
		v.lru.Remove(e)
		delete(v.cache, sum)
		return Claims{}, false
	}
	v.lru.MoveToFront(e)
	return c.claims, true
}

func (v *Verifier) store(sum [32]byte, c Claims, exp time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.cache[sum]; ok {
		return
	}
	v.cache[sum] = v.lru.PushFront(&cached{sum: sum, claims: c, exp: exp})
	for v.lru.Len() > cacheSize {
		old := v.lru.Back()
		v.lru.Remove(old)
		delete(v.cache, old.Value.(*cached).sum)
	}
}
