package proxy_test

import (
	"encoding/base64"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/secrets"
)

// TestSchemes: each auth scheme needs its fields, injects exactly one
// credential (twice, as on a 401 retry, still one), says where a drop-in
// key sits, and lists what it put on the wire.
func TestSchemes(t *testing.T) {
	cred := secrets.Credential{Fields: map[string]secrets.Secret{"user": "u_PLANTED", "pass": "p_PLANTED", "tok": "t+PLANTED/="}}
	cases := []struct {
		name     string
		s        proxy.Scheme
		fields   []string
		header   string // Authorization or the scheme's header, as injected
		hname    string
		query    string
		slot     callers.Slot
		injected []string
	}{
		{"basic", proxy.BasicAuth("user", "pass"), []string{"user", "pass"},
			"Basic " + base64.StdEncoding.EncodeToString([]byte("u_PLANTED:p_PLANTED")), "Authorization", "a=1&api_key=caller",
			callers.Slot{Basic: true},
			[]string{"u_PLANTED", "p_PLANTED", "u_PLANTED:p_PLANTED", base64.StdEncoding.EncodeToString([]byte("u_PLANTED:p_PLANTED"))}},
		{"header with prefix", proxy.HeaderAuth("x-api-key", "Token ", "tok"), []string{"tok"},
			"Token t+PLANTED/=", "X-Api-Key", "a=1&api_key=caller",
			callers.Slot{Headers: []string{"X-Api-Key"}}, []string{"t+PLANTED/="}},
		{"query", proxy.QueryAuth("api_key", "tok"), []string{"tok"},
			"", "", "a=1&api_key=t%2BPLANTED%2F%3D",
			callers.Slot{Params: []string{"api_key"}}, []string{"t+PLANTED/="}},
		{"header with drop-in slots", proxy.WithDropin(proxy.HeaderAuth("Authorization", "", "tok"), []string{"X-Access-Token"}, []string{"access_token"}),
			[]string{"tok"}, "t+PLANTED/=", "Authorization", "a=1&api_key=caller",
			callers.Slot{Headers: []string{"Authorization", "X-Access-Token"}, Params: []string{"access_token"}}, []string{"t+PLANTED/="}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Fields(); !reflect.DeepEqual(got, tc.fields) {
				t.Errorf("Fields %v", got)
			}
			r := httptest.NewRequest("GET", "/x?a=1&api_key=caller", nil)
			tc.s.Inject(r, cred)
			tc.s.Inject(r, cred)
			if tc.hname != "" {
				if v := r.Header.Values(tc.hname); len(v) != 1 || v[0] != tc.header {
					t.Errorf("%s = %q, want %q", tc.hname, v, tc.header)
				}
			}
			if r.URL.RawQuery != tc.query {
				t.Errorf("query %q, want %q", r.URL.RawQuery, tc.query)
			}
			if got := tc.s.Slot(); !reflect.DeepEqual(got, tc.slot) {
				t.Errorf("Slot %+v, want %+v", got, tc.slot)
			}
			if got := tc.s.Injected(cred); !reflect.DeepEqual(got, tc.injected) {
				t.Errorf("Injected %v", got)
			}
		})
	}
}
