package oauth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/egress"
	"github.com/keybroker/keybroker/internal/secrets"
)

// Source holds credentials as their sources have them (the secrets
// cache).
type Source interface {
	Get(ctx context.Context, name string) (secrets.Credential, error)
	// Refused is told the vendor refused version used on a call, and
	// returns the credential to use now (secrets.Cache.Refused: a 401
	// never promotes a version the vendor refuses).
	Refused(ctx context.Context, name string, used int) (secrets.Credential, error)
}

// Grant is an OAuth upstream's client-credentials grant.
type Grant struct {
	// TokenURL is the vendor's token endpoint (absolute, or relative to
	// the upstream's URL).
	TokenURL string
	Scopes   []string
	// Basic sends the client credentials as HTTP Basic, else in the body.
	Basic bool
}

// Upstream is an OAuth upstream: its grant, and how its token endpoint is
// reached (the way the vendor is: egress proxy, CA; never following a
// redirect).
type Upstream struct {
	Name     string
	Grant    Grant
	TokenURL *url.URL // Grant.TokenURL resolved
	Dialer   *egress.Dialer
	Timeout  time.Duration
	// Key is what the keeper is made from: an Update keeps the keeper
	// (and its token) of an upstream whose Key did not change.
	Key string
}

// CredentialsOptions are a Credentials' collaborators.
type CredentialsOptions struct {
	// Source is required.
	Source Source
	// OnFetch, when set, is told of every vendor token fetch.
	OnFetch func(Fetch)
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Credentials serves every upstream's credential as it is injected: as
// stored for most, with its vendor token for an OAuth upstream, whose
// keeper (VendorTokens) it owns. The proxy sees one Get and one Refused,
// whatever the upstream's kind.
type Credentials struct {
	opts    CredentialsOptions
	mu      sync.Mutex // one Update at a time
	keepers atomic.Pointer[map[string]*keeper]
}

type keeper struct {
	key    string
	tokens *VendorTokens
}

// NewCredentials returns credentials over opts.Source, with no OAuth
// upstream until Update.
func NewCredentials(opts CredentialsOptions) *Credentials {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Credentials{opts: opts}
	c.keepers.Store(&map[string]*keeper{})
	return c
}

// Update makes the token keepers of ups: an upstream whose Key did not
// change keeps its keeper and token, a new or changed one gets a new
// keeper at once. An upstream no longer in ups keeps its keeper until
// retire is called (once the routes that reach it are gone), which closes
// every keeper this Update replaced or dropped.
func (c *Credentials) Update(ups []Upstream) (retire func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.keepers.Load()
	next := make(map[string]*keeper, len(ups))
	keep := make(map[string]*keeper, len(ups))
	for _, u := range ups {
		k := old[u.Name]
		if k == nil || k.key != u.Key {
			k = &keeper{key: u.Key, tokens: c.newKeeper(u)}
		}
		next[u.Name], keep[u.Name] = k, k
	}
	for name, k := range old {
		if _, ok := next[name]; !ok {
			next[name] = k // until retire
		}
	}
	c.keepers.Store(&next)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		pruned := map[string]*keeper{}
		for name, k := range *c.keepers.Load() {
			if keep[name] == nil && k == old[name] {
				continue // dropped by this Update, kept until now
			}
			pruned[name] = k
		}
		c.keepers.Store(&pruned)
		for name, k := range old {
			if keep[name] != k {
				k.tokens.Close()
			}
		}
	}
}

// Close stops every keeper's background refresh.
func (c *Credentials) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range *c.keepers.Load() {
		k.tokens.Close()
	}
	c.keepers.Store(&map[string]*keeper{})
}

func (c *Credentials) newKeeper(u Upstream) *VendorTokens {
	client := &http.Client{
		Transport:     egress.NewTransport(u.Dialer, u.Timeout),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	name := u.Name
	return NewVendorTokens(VendorConfig{
		Upstream: name, TokenURL: u.TokenURL, Scopes: u.Grant.Scopes, Basic: u.Grant.Basic, Client: client,
		Timeout: u.Timeout, Now: c.opts.Now, OnFetch: c.opts.OnFetch,
		Credential: func(ctx context.Context) (secrets.Credential, error) {
			return c.opts.Source.Get(ctx, name)
		},
	})
}

func (c *Credentials) tokens(name string) *VendorTokens {
	if k := (*c.keepers.Load())[name]; k != nil {
		return k.tokens
	}
	return nil
}

// Get returns the credential to inject for upstream name: an OAuth
// upstream's with its vendor token as Token. A token that cannot be had
// is a *FetchError, which says whether the token endpoint could not be
// reached (Unreachable) or answered too late (Timeout).
func (c *Credentials) Get(ctx context.Context, name string) (secrets.Credential, error) {
	cred, err := c.opts.Source.Get(ctx, name)
	if err != nil {
		return cred, err
	}
	if t := c.tokens(name); t != nil {
		return t.Token(ctx, cred)
	}
	return cred, nil
}

// Refused is told that the vendor refused used, the credential a call
// carried, and returns the credential to send the call once more with:
// the source is told which version was refused (it reads again, and
// proves what it finds), and an OAuth upstream's token is renewed with
// the client credential it then serves. ok is false when there is
// nothing new to try.
func (c *Credentials) Refused(ctx context.Context, name string, used secrets.Credential) (secrets.Credential, bool) {
	fresh, err := c.opts.Source.Refused(ctx, name, used.Version)
	if t := c.tokens(name); t != nil {
		// The vendor refused the token: fetch a new one with the client
		// credential as now read.
		if err != nil {
			fresh = used
		}
		return t.Renew(ctx, used, fresh)
	}
	if err != nil || fresh.Version == used.Version {
		return secrets.Credential{}, false
	}
	return fresh, true
}

// Prove judges a rotated credential of upstream name before it is used.
// For an OAuth upstream the token endpoint judges first (refused on
// invalid_client), and the token it gives is kept for when the version
// goes into use and handed to probe; probe is the vendor's own judgement
// (the upstream's probe request; secrets.Unprovable when it has none).
func (c *Credentials) Prove(ctx context.Context, name string, cred secrets.Credential,
	probe func(context.Context, string, secrets.Credential) (secrets.Proof, secrets.Verdict)) (secrets.Proof, secrets.Verdict) {
	t := c.tokens(name)
	if t == nil {
		return probe(ctx, name, cred)
	}
	tc, ferr := t.Prove(ctx, cred)
	if ferr != nil {
		proof := secrets.Unknown
		if ferr.Client {
			proof = secrets.Refused
		}
		return proof, secrets.Verdict{Status: ferr.Status, Detail: fmt.Sprintf("version %d: %s", cred.Version, ferr.Msg)}
	}
	proof, verdict := probe(ctx, name, tc)
	if proof == secrets.Unprovable {
		return secrets.Accepted, secrets.Verdict{Status: http.StatusOK,
			Detail: fmt.Sprintf("version %d: the token endpoint issued a token", cred.Version)}
	}
	return proof, verdict
}

// Failures returns, per OAuth upstream whose last vendor token request
// failed, why (it names the token endpoint, never a value).
func (c *Credentials) Failures() map[string]string {
	out := map[string]string{}
	for name, k := range *c.keepers.Load() {
		if fe := k.tokens.Failing(); fe != nil {
			out[name] = fe.Msg
		}
	}
	return out
}

// Event is the audit event of a fetch worth one: a credential version's
// first token, the first failure after a success and the recovery. ok is
// false for the rest (refreshes that worked, repeated failures). Never the
// token.
func (f Fetch) Event() (ev audit.Event, ok bool) {
	ev = audit.Event{Upstream: f.Upstream, Source: f.Cred.Source, Ref: f.Cred.Ref, Version: f.Cred.Version}
	switch {
	case f.Err != nil && f.Changed:
		ev.Name, ev.Status, ev.Detail = "token_fetch_failed", f.Err.Status, f.Err.Msg
	case f.Err == nil && (f.Reason == ReasonFirst || f.Changed):
		ev.Name, ev.Detail = "token_fetched", "vendor token valid until "+f.Expires.UTC().Format(time.RFC3339)
		if f.Changed {
			ev.Detail += " (the token endpoint answers again)"
		}
	default:
		return ev, false
	}
	return ev, true
}

// Result is the fetch's result as metrics count it: ok, refused, failed,
// unreachable or timeout.
func (f Fetch) Result() string {
	if f.Err == nil {
		return "ok"
	}
	return [...]string{"", "refused", "failed", "unreachable", "timeout"}[f.Err.Kind]
}

// Unreachable reports whether the token endpoint could not be reached.
func (e *FetchError) Unreachable() bool { return e.Kind == Unreachable }

// Timeout reports whether the token endpoint did not answer in time.
func (e *FetchError) Timeout() bool { return e.Kind == Timeout }
