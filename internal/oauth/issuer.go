package oauth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// TokenPrefix starts every token keybroker issues, so that it is told
// apart from a caller key (kbk_) and a JWT at a glance.
const TokenPrefix = "kbt."

// Grace is how long past its expires_in a keybroker token is still
// accepted: clients such as pyhuntress fetch a new token only once their
// own clock is past the expiry, and a call sent just before must not fail
// on arrival.
const Grace = 30 * time.Second

// MinKeyBytes is the shortest signing key accepted.
const MinKeyBytes = 32

// SigningKey is the key keybroker's tokens are signed with (HMAC-SHA256).
type SigningKey struct {
	Secret  []byte
	Version int
}

// KeyFunc returns the current signing key; reread asks the source again
// (a token signed by a key this replica has not seen yet).
type KeyFunc func(ctx context.Context, reread bool) (SigningKey, error)

// Claims are what a keybroker token says: the caller, the upstream it is
// for, a fingerprint of the caller's key hash (a reload that changes or
// removes the key revokes the token), and when it expires.
type Claims struct {
	Caller      string `json:"c"`
	Upstream    string `json:"u"`
	Fingerprint string `json:"f"`
	Expires     int64  `json:"e"`
	// ID is the token's own random id (96 bits, base64url), set by Issue,
	// so that no two tokens are alike. Tokens from before it was added
	// have none and stay valid until they expire. Never audited.
	ID string `json:"j,omitempty"`
}

// Issuer signs and verifies keybroker's tokens. A rotated signing key
// keeps the previous one valid for one token lifetime, so no token in use
// stops working when the key changes.
type Issuer struct {
	key func(ctx context.Context, reread bool) (SigningKey, error)
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	cur   string // kid of the current key
	known map[string]*knownKey
}

type knownKey struct {
	secret []byte
	until  time.Time // zero: current
}

// Token verification failures; their texts go to the caller (they are the
// token's own facts, not anyone's secret).
var (
	ErrMalformed   = errors.New("not a keybroker token")
	ErrBadMAC      = errors.New("keybroker token signature does not verify")
	ErrExpired     = errors.New("keybroker token expired; fetch a new one from the token endpoint")
	ErrNoKey       = errors.New("keybroker token signing key unavailable")
	ErrWrongTarget = errors.New("keybroker token was issued for another upstream")
)

// NewIssuer returns an issuer of tokens living ttl, signed with key. A nil
// key signs with a random key made now, which only this process knows.
func NewIssuer(key KeyFunc, ttl time.Duration, now func() time.Time) *Issuer {
	if now == nil {
		now = time.Now
	}
	if key == nil {
		secret := make([]byte, MinKeyBytes)
		_, _ = rand.Read(secret)
		key = func(context.Context, bool) (SigningKey, error) { return SigningKey{Secret: secret, Version: 1}, nil }
	}
	return &Issuer{key: key, ttl: ttl, now: now, known: map[string]*knownKey{}}
}

// TTL is how long a new token lives.
func (is *Issuer) TTL() time.Duration { return is.ttl }

// Fingerprint is what a token binds of a caller's key hash: a reload that
// changes the key changes it.
func Fingerprint(keySHA256 []byte) string {
	s := sha256.Sum256(append([]byte("keybroker token binding\x00"), keySHA256...))
	return hex.EncodeToString(s[:12])
}

// Issue returns a new token for c (Expires is set here).
func (is *Issuer) Issue(ctx context.Context, c Claims) (string, time.Duration, error) {
	kid, secret, err := is.current(ctx, false)
	if err != nil {
		return "", 0, err
	}
	c.Expires = is.now().Add(is.ttl).Unix()
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", 0, fmt.Errorf("token id: %w", err)
	}
	c.ID = base64.RawURLEncoding.EncodeToString(id[:])
	payload, _ := json.Marshal(c)
	head := TokenPrefix + kid + "." + base64.RawURLEncoding.EncodeToString(payload)
	return head + "." + base64.RawURLEncoding.EncodeToString(mac(secret, head)), is.ttl, nil
}

// Verify checks tok's signature and expiry (with Grace) and returns its
// claims.
func (is *Issuer) Verify(ctx context.Context, tok string) (Claims, error) {
	rest, ok := strings.CutPrefix(tok, TokenPrefix)
	if !ok || len(tok) > 4096 {
		return Claims{}, ErrMalformed
	}
	kid, rest, ok1 := strings.Cut(rest, ".")
	body, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return Claims{}, ErrMalformed
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return Claims{}, ErrMalformed
	}
	secret, err := is.lookup(ctx, kid)
	if err != nil {
		return Claims{}, err
	}
	head := TokenPrefix + kid + "." + body
	if subtle.ConstantTimeCompare(got, mac(secret, head)) != 1 {
		return Claims{}, ErrBadMAC
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return Claims{}, ErrMalformed
	}
	var c Claims
	if err := json.Unmarshal(raw, &c); err != nil || c.Caller == "" || c.Upstream == "" {
		return Claims{}, ErrMalformed
	}
	if !is.now().Before(time.Unix(c.Expires, 0).Add(Grace)) {
		return Claims{}, ErrExpired
	}
	return c, nil
}

// lookup finds the key of kid: the current key, a previous one within its
// grace, or (once the source is asked again) a key another replica
// already uses.
func (is *Issuer) lookup(ctx context.Context, kid string) ([]byte, error) {
	if _, _, err := is.current(ctx, false); err != nil {
		return nil, err
	}
	if s := is.known1(kid); s != nil {
		return s, nil
	}
	if _, _, err := is.current(ctx, true); err != nil {
		return nil, err
	}
	if s := is.known1(kid); s != nil {
		return s, nil
	}
	return nil, ErrBadMAC
}

func (is *Issuer) known1(kid string) []byte {
	is.mu.Lock()
	defer is.mu.Unlock()
	k := is.known[kid]
	if k == nil || (!k.until.IsZero() && is.now().After(k.until)) {
		return nil
	}
	return k.secret
}

// current reads the signing key and makes it current; the key it
// replaces stays valid for one token lifetime (and the grace).
func (is *Issuer) current(ctx context.Context, reread bool) (string, []byte, error) {
	k, err := is.key(ctx, reread)
	if err != nil {
		return "", nil, ErrNoKey
	}
	if len(k.Secret) < MinKeyBytes {
		return "", nil, ErrNoKey
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	if cur := is.known[is.cur]; cur != nil && bytes.Equal(cur.secret, k.Secret) {
		return is.cur, cur.secret, nil
	}
	kid := KeyID(k.Secret)
	if kid == is.cur {
		return kid, is.known[kid].secret, nil
	}
	now := is.now()
	if prev := is.known[is.cur]; prev != nil {
		prev.until = now.Add(is.ttl + Grace)
	}
	for id, old := range is.known {
		if !old.until.IsZero() && now.After(old.until) {
			delete(is.known, id)
		}
	}
	is.known[kid] = &knownKey{secret: k.Secret}
	is.cur = kid
	return kid, k.Secret, nil
}

// KeyID names a signing key without revealing it.
func KeyID(secret []byte) string {
	s := sha256.Sum256(append([]byte("keybroker token key id\x00"), secret...))
	return hex.EncodeToString(s[:6])
}

func mac(secret []byte, head string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(head))
	return m.Sum(nil)
}
