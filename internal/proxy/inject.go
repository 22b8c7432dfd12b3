package proxy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/secrets"
)

// inject puts the vendor credential into the outgoing request, replacing
// whatever is in that slot. Fields were checked when the credential was
// loaded, so a missing one cannot happen here; if it did, the slot is left
// empty and the vendor refuses the call.
func inject(out *http.Request, a config.Auth, cred secrets.Credential) {
	switch a.Type {
	case "basic":
		user, _ := cred.Field(a.UsernameField)
		pass, _ := cred.Field(a.PasswordField)
		out.SetBasicAuth(user.Reveal(), pass.Reveal())
	case "header":
		v, _ := cred.Field(a.Field)
		out.Header.Set(a.Header, a.Prefix+v.Reveal())
	case "query":
		v, _ := cred.Field(a.Field)
		q := out.URL.RawQuery
		if q != "" {
			q += "&"
		}
		out.URL.RawQuery = q + url.QueryEscape(a.Param) + "=" + url.QueryEscape(v.Reveal())
		out.URL.RawQuery = dropParam(out.URL.RawQuery, a.Param, 1)
	}
}

// dropParam removes every occurrence of param except the last keep ones.
func dropParam(raw, param string, keep int) string {
	pairs := strings.Split(raw, "&")
	n := 0
	for _, p := range pairs {
		if k, _, _ := strings.Cut(p, "="); k == url.QueryEscape(param) {
			n++
		}
	}
	out := pairs[:0]
	for _, p := range pairs {
		if k, _, _ := strings.Cut(p, "="); k == url.QueryEscape(param) && n > keep {
			n--
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, "&")
}
