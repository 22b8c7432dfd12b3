package config

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/operations"
)

// completeOperations builds each upstream's operation catalogue: from its
// operations.openapi file, else its preset's, moved below the URL's own
// path. A file left unopened (validate --skip-files) leaves the upstream
// without one, and the rules naming its operations unchecked.
func (c *Config) completeOperations(e *errs) {
	c.catalogues = map[string]*operations.Catalogue{}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		p := fmt.Sprintf("upstreams[%d]", i)
		pu, err := url.Parse(u.URL)
		if err != nil || pu.Host == "" {
			continue // the URL's own error is reported: no cascade
		}
		urlPath := strings.TrimSuffix(pu.Path, "/")
		var cat *operations.Catalogue
		switch o := u.Operations; {
		case o != nil:
			cat, err = loadCatalogue(e, p+".operations", o, urlPath)
		case operations.Preset(u.Preset) != nil:
			if cat, err = operations.Preset(u.Preset).Below(urlPath); err != nil {
				err = fmt.Errorf("the %s preset's operations do not fit this URL's path: %w", u.Preset, err)
			}
		}
		if err != nil {
			e.add(p+".operations", "%v", err)
			continue
		}
		if cat != nil {
			c.catalogues[u.Name] = cat
		}
	}
}

// loadCatalogue reads an operations: block's spec file.
func loadCatalogue(e *errs, path string, o *Operations, urlPath string) (*operations.Catalogue, error) {
	tiers := map[string]operations.Tier{}
	for name, t := range o.Tiers {
		tier, ok := operations.ParseTier(t)
		if !ok {
			e.add(path+".tiers."+name, "must be read, respond or admin, not %s", quote(t))
			continue
		}
		tiers[name] = tier
	}
	if o.OpenAPI == "" {
		return nil, fmt.Errorf("openapi: required (a Swagger 2.0 or OpenAPI 3 file)")
	}
	if e.skipFiles {
		e.unchecked = append(e.unchecked, path+".openapi: "+o.OpenAPI)
		return nil, nil
	}
	data, err := os.ReadFile(o.OpenAPI)
	if err != nil {
		return nil, fmt.Errorf("openapi: cannot read %s", quote(o.OpenAPI))
	}
	ops, err := operations.FromSpec(data, operations.SpecOptions{URLPath: urlPath, Tiers: tiers})
	if err != nil {
		return nil, fmt.Errorf("openapi %s: %w", quote(o.OpenAPI), err)
	}
	return operations.New(ops, operations.Options{})
}

// checkAllowOperations checks an allow rule's operations and tiers against
// its upstream's catalogue, and warns of a methods/paths rule that matches
// none of the upstream's documented operations.
func (c *Config) checkAllowOperations(e *errs, path string, a *AllowRule) {
	for i, t := range a.Tiers {
		if _, ok := operations.ParseTier(t); !ok {
			e.add(fmt.Sprintf("%s.tiers[%d]", path, i), "must be read, respond or admin, not %s", quote(t))
		}
	}
	u := c.Upstream(a.Upstream)
	if u == nil {
		return // named as unknown already
	}
	cat := c.catalogues[a.Upstream]
	if cat == nil {
		if (len(a.Operations) > 0 || len(a.Tiers) > 0) && u.Operations == nil {
			e.add(path, "upstream %s has no operation catalogue: set upstreams[].operations.openapi, or use methods and paths", quote(a.Upstream))
		}
		return // (or its spec file was left unopened: validate --skip-files names it)
	}
	for i, name := range a.Operations {
		if _, ok := cat.Lookup(name); !ok {
			e.add(fmt.Sprintf("%s.operations[%d]", path, i), "upstream %s has no operation %s%s (keybroker operations %s lists them)",
				quote(a.Upstream), quote(name), didYouMean(name, cat.Names()), a.Upstream)
		}
	}
	if len(a.Operations) > 0 || len(a.Tiers) > 0 || (len(a.Methods) == 0 && len(a.Paths) == 0) {
		return
	}
	for _, op := range cat.Operations() {
		if cat.Fallback(op) {
			return // a catch-all (infocyte: every GET) documents every path
		}
		if len(a.Methods) > 0 && !slices.Contains(a.Methods, op.Method) && !(op.Method == "GET" && slices.Contains(a.Methods, "HEAD")) {
			continue
		}
		for _, tmpl := range op.Paths {
			if RuleCovers(a.Paths, tmpl) != CoversNone {
				return
			}
		}
	}
	c.warnings = append(c.warnings, fmt.Sprintf("%s: matches none of upstream %s's documented operations (keybroker operations %s lists them); a misspelt path?",
		path, quote(a.Upstream), a.Upstream))
}

// Coverage says how much of a path template a rule's path patterns cover.
type Coverage int

// Coverages.
const (
	CoversNone Coverage = iota
	// CoversSome: some values of a parameter only (a pattern naming one
	// agent's id).
	CoversSome
	CoversAll
)

// sampleValues fill a template's parameters to test what patterns cover:
// two that no pattern names by accident.
var sampleValues = [2]string{"kb-sample-1", "kb-sample-2"}

// RuleCovers says whether path patterns (none: every path) cover every
// value of a template's parameters, some, or none.
func RuleCovers(patterns []string, template string) Coverage {
	if len(patterns) == 0 {
		return CoversAll
	}
	hits := 0
	for _, v := range sampleValues {
		path := operations.Fill(template, v)
		for _, p := range patterns {
			if callers.Match(p, path) {
				hits++
				break
			}
		}
	}
	switch {
	case hits == len(sampleValues):
		return CoversAll
	case hits > 0 || literalCovered(patterns, template):
		return CoversSome
	}
	return CoversNone
}

// literalCovered: a pattern names a value of the template's parameters
// (/v1/agents/7 for /v1/agents/{id}).
func literalCovered(patterns []string, template string) bool {
	ts := strings.Split(template, "/")
	for _, p := range patterns {
		ps := strings.Split(strings.TrimSuffix(p, "/**"), "/")
		if len(ps) > len(ts) || (len(ps) < len(ts) && !strings.HasSuffix(p, "/**")) {
			continue
		}
		ok := true
		for i, s := range ps {
			if s != "*" && s != ts[i] && !strings.HasPrefix(ts[i], "{") {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
