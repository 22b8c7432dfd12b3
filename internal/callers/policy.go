package callers

import (
	"fmt"
	"strings"

	"github.com/keybroker/keybroker/internal/config"
)

type rule struct {
	upstream string
	methods  map[string]bool // nil: every method
	paths    []pattern       // nil: every path
}

// pattern is an allow.paths entry split into segments; "*" matches one
// segment; deep means a trailing "/**": the path itself or any depth below.
type pattern struct {
	segs []string
	deep bool
}

func compileRules(allow []config.AllowRule) []rule {
	rules := make([]rule, 0, len(allow))
	for _, a := range allow {
		r := rule{upstream: a.Upstream}
		if len(a.Methods) > 0 {
			r.methods = map[string]bool{}
			for _, m := range a.Methods {
				r.methods[strings.ToUpper(m)] = true
			}
		}
		for _, p := range a.Paths {
			r.paths = append(r.paths, compilePattern(p))
		}
		rules = append(rules, r)
	}
	return rules
}

func compilePattern(p string) pattern {
	pat := pattern{}
	if p == "/**" {
		return pattern{deep: true}
	}
	if strings.HasSuffix(p, "/**") {
		pat.deep = true
		p = strings.TrimSuffix(p, "/**")
	}
	pat.segs = strings.Split(strings.TrimPrefix(p, "/"), "/")
	return pat
}

// Match reports whether path (clean, absolute) matches pattern text p.
// Exported for tests and the fuzz target.
func Match(p, path string) bool { return compilePattern(p).match(path) }

func (p pattern) match(path string) bool {
	if !strings.HasPrefix(path, "/") {
		return false
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if path == "/" {
		segs = []string{""}
	}
	if p.segs == nil { // "/**"
		return true
	}
	if len(segs) < len(p.segs) || (!p.deep && len(segs) != len(p.segs)) {
		return false
	}
	for i, s := range p.segs {
		if s == "*" {
			if segs[i] == "" {
				return false
			}
			continue
		}
		if s != segs[i] {
			return false
		}
	}
	return true
}

// Decision is the policy's answer for one call.
type Decision struct {
	Allowed bool
	// Reason says, when not allowed, which rule was missing, in terms of the
	// call (caller, upstream, method, path), never of other callers' rules.
	Reason string
}

// Allow decides whether id may call method on path (the clean path below
// the upstream, exactly as forwarded) of upstream. A caller without allow
// rules, and an anonymous caller, may call everything.
func (id Identity) Allow(upstream, method, path string) Decision {
	c := id.caller
	if c == nil || c.rules == nil {
		return Decision{Allowed: true}
	}
	upstreamSeen, methodSeen := false, false
	for _, r := range c.rules {
		if r.upstream != upstream {
			continue
		}
		upstreamSeen = true
		if r.methods != nil && !r.methods[method] {
			continue
		}
		methodSeen = true
		if r.paths == nil {
			return Decision{Allowed: true}
		}
		for _, p := range r.paths {
			if p.match(path) {
				return Decision{Allowed: true}
			}
		}
	}
	switch {
	case !upstreamSeen:
		return Decision{Reason: fmt.Sprintf("caller %q has no allow rule for upstream %q", c.Name, upstream)}
	case !methodSeen:
		return Decision{Reason: fmt.Sprintf("caller %q has no allow rule for %s on upstream %q", c.Name, method, upstream)}
	default:
		return Decision{Reason: fmt.Sprintf("caller %q has no allow rule for %s %s on upstream %q", c.Name, method, path, upstream)}
	}
}

// RateLimit returns the caller's own rate limit, nil when it has none.
func (id Identity) RateLimit() *config.RateLimit {
	if id.caller == nil {
		return nil
	}
	return id.caller.rateLimit
}
