package callers

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

type rule struct {
	upstream   string
	methods    map[string]bool // nil: every method
	paths      []pattern       // nil: every path
	operations []string        // nil: any (documented, when tiers is set)
	tiers      []string        // nil: any (documented, when operations is set)
}

// documented: the rule matches documented operations only.
func (r *rule) documented() bool { return r.operations != nil || r.tiers != nil }

// pattern is an allow.paths entry split into segments; "*" matches one
// segment; deep means a trailing "/**": the path itself or any depth below.
type pattern struct {
	segs []string
	deep bool
}

func compileRules(allow []Rule) ([]rule, error) {
	rules := make([]rule, 0, len(allow))
	for _, a := range allow {
		r := rule{upstream: a.Upstream, operations: a.Operations, tiers: a.Tiers}
		if len(a.Methods) > 0 {
			r.methods = map[string]bool{}
			for _, m := range a.Methods {
				r.methods[strings.ToUpper(m)] = true
			}
		}
		for _, p := range a.Paths {
			pat, err := ParsePattern(p)
			if err != nil {
				return nil, fmt.Errorf("path pattern %q: %w", p, err)
			}
			r.paths = append(r.paths, pat)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// ParsePattern parses an allow.paths pattern: an absolute, clean path whose
// segments are literal or *, optionally ending in /** (the path itself or
// any depth below). This is the grammar's one definition: configuration
// validation calls it too.
func ParsePattern(p string) (pattern, error) {
	if !strings.HasPrefix(p, "/") {
		return pattern{}, errors.New("must start with /")
	}
	if p == "/**" {
		return pattern{deep: true}, nil
	}
	pat := pattern{}
	body := p
	if strings.HasSuffix(p, "/**") {
		pat.deep = true
		body = strings.TrimSuffix(p, "/**")
	}
	pat.segs = strings.Split(strings.TrimPrefix(body, "/"), "/")
	for _, seg := range pat.segs {
		switch {
		case seg == "" && body != "/":
			return pattern{}, errors.New("empty path segment")
		case seg == "." || seg == "..":
			return pattern{}, errors.New("dot segments are not allowed")
		case strings.Contains(seg, "**"):
			return pattern{}, errors.New("** is allowed only as a trailing /**")
		case strings.Contains(seg, "*") && seg != "*":
			return pattern{}, errors.New("* must be a whole segment")
		}
	}
	return pat, nil
}

// Match reports whether path (clean, absolute) matches pattern text p; a
// malformed pattern matches nothing. Exported for tests and the fuzz target.
func Match(p, path string) bool {
	pat, err := ParsePattern(p)
	return err == nil && pat.match(path)
}

func (p pattern) match(path string) bool {
	if !strings.HasPrefix(path, "/") {
		return false
	}
	if p.segs == nil { // "/**"
		return true
	}
	// Segment by segment, without splitting (this runs on every call).
	rest, more := path[1:], true
	for _, s := range p.segs {
		if !more {
			return false // the path is shorter than the pattern
		}
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		if s == "*" {
			if seg == "" {
				return false
			}
			continue
		}
		if s != seg {
			return false
		}
	}
	return p.deep || !more
}

// Decision is the policy's answer for one call.
type Decision struct {
	Allowed bool
	// Reason says, when not allowed, which rule was missing, in terms of the
	// call (caller, upstream, method, path), never of other callers' rules.
	Reason string
}

// MayUse reports whether id has any allow rule for upstream.
func (id Identity) MayUse(upstream string) bool {
	c := id.caller
	if c == nil || c.rules == nil {
		return true
	}
	for _, r := range c.rules {
		if r.upstream == upstream {
			return true
		}
	}
	return false
}

// Action is what a call asks to do, as the policy judges it.
type Action struct {
	Upstream, Method string
	// Path is the clean path below the upstream, exactly as forwarded.
	Path string
	// Operation and Tier name the vendor's documented operation the call
	// is, and its risk tier (read, respond, admin), where the upstream has
	// an operation catalogue; "" for none or an undocumented call.
	Operation, Tier string
}

// Allow decides whether id may do a. A caller without allow rules, and an
// anonymous caller, may do everything.
func (id Identity) Allow(a Action) Decision {
	upstream, method, path := a.Upstream, a.Method, a.Path
	c := id.caller
	if c == nil || c.rules == nil {
		return Decision{Allowed: true}
	}
	upstreamSeen, methodSeen := false, false
	for i := range c.rules {
		r := &c.rules[i]
		if r.upstream != upstream {
			continue
		}
		upstreamSeen = true
		if r.methods != nil && !r.methods[method] {
			continue
		}
		methodSeen = true
		if r.documented() && (a.Operation == "" ||
			(r.operations != nil && !slices.Contains(r.operations, a.Operation)) ||
			(r.tiers != nil && !slices.Contains(r.tiers, a.Tier))) {
			continue
		}
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
		return Decision{Reason: fmt.Sprintf("caller %q has no allow rule for upstream %q", c.name, upstream)}
	case a.Operation != "":
		// In the vendor's terms: what the call is, and its risk.
		return Decision{Reason: fmt.Sprintf("operation %s (%s) is not allowed for caller %s", a.Operation, a.Tier, c.name)}
	case !methodSeen:
		return Decision{Reason: fmt.Sprintf("caller %q has no allow rule for %s on upstream %q", c.name, method, upstream)}
	default:
		return Decision{Reason: fmt.Sprintf("caller %q has no allow rule for %s %s on upstream %q", c.name, method, path, upstream)}
	}
}
