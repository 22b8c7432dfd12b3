// Package rawquery splits a raw URL query into its name=value pairs the
// one way keybroker reads a query: on '&', each pair kept byte for byte,
// names and values compared after decoding (a ';' never reaches it: the
// proxy refuses one in a query). Forwarding (stripping a caller's key and
// the injected parameter), the reply guard (links that must not carry a
// credential) and the audit (redacting credential values) all use it, so
// all three see the same parameters.
package rawquery

import (
	"net/url"
	"strings"
)

// Filter removes the pairs for which drop says so, given the decoded name
// and value and the raw pair, and keeps the rest byte for byte and in
// order. A name or value whose escapes do not decode is given as is.
func Filter(raw string, drop func(name, value, pair string) bool) string {
	if raw == "" {
		return ""
	}
	pairs := strings.Split(raw, "&")
	kept := pairs[:0]
	for _, pair := range pairs {
		k, v := decode(pair)
		if !drop(k, v, pair) {
			kept = append(kept, pair)
		}
	}
	return strings.Join(kept, "&")
}

// Map replaces each pair by what f returns for it (given the decoded name
// and value and the raw pair), keeping the order and the '&'s: a pair f
// returns unchanged stays byte for byte.
func Map(raw string, f func(name, value, pair string) string) string {
	if raw == "" {
		return ""
	}
	pairs := strings.Split(raw, "&")
	for i, pair := range pairs {
		k, v := decode(pair)
		pairs[i] = f(k, v, pair)
	}
	return strings.Join(pairs, "&")
}

// decode is a pair's name and value, each decoded when its escapes allow.
func decode(pair string) (name, value string) {
	k, v, _ := strings.Cut(pair, "=")
	if dk, err := url.QueryUnescape(k); err == nil {
		k = dk
	}
	if dv, err := url.QueryUnescape(v); err == nil {
		v = dv
	}
	return k, v
}

// Drop removes every pair whose decoded name is one of names, compared
// without regard to case: a parameter that might be read as a credential's
// is stripped however it is spelled.
func Drop(raw string, names ...string) string {
	if len(names) == 0 || raw == "" {
		return raw
	}
	return Filter(raw, func(name, _, _ string) bool { return HasName(names, name) })
}

// HasName reports whether name is one of names, compared without regard
// to case.
func HasName(names []string, name string) bool {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}
