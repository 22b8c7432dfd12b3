package oauth

import (
	"net/http"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/secrets"
)

// Bearer is the auth scheme of an OAuth2 upstream (it satisfies the
// proxy's Scheme): the vendor token, the credential's Token, as
// Authorization: Bearer. A caller's own key or keybroker token goes in the
// same header.
func Bearer() BearerScheme { return BearerScheme{} }

// BearerScheme injects a vendor token.
type BearerScheme struct{}

// Fields are the client credential's, from which the token is fetched.
func (BearerScheme) Fields() []string { return []string{FieldClientID, FieldClientSecret} }

// Inject sets Authorization to the vendor token.
func (BearerScheme) Inject(out *http.Request, c secrets.Credential) {
	out.Header["Authorization"] = []string{"Bearer " + c.Token.Reveal()}
}

// Slot is where a drop-in caller's key sits: Authorization.
func (BearerScheme) Slot() callers.Slot { return callers.Slot{Headers: []string{"Authorization"}} }

// Injected are the values no reply may carry: the token, and the client
// secret it was fetched with.
func (BearerScheme) Injected(c secrets.Credential) []string {
	s, _ := c.Field(FieldClientSecret)
	return []string{c.Token.Reveal(), s.Reveal()}
}
