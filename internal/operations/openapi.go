package operations

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"go.yaml.in/yaml/v4"
)

// SpecOptions say how a spec's operations become a catalogue.
type SpecOptions struct {
	// URLPath is the path of the upstream's URL: the spec's base path
	// (Swagger's basePath, OpenAPI's first server) must begin with it or
	// be a prefix of it, and templates are stored below it.
	URLPath string
	// Tiers override an operation's tier by name. Default: GET and HEAD
	// read, every other method admin.
	Tiers map[string]Tier
	// Twin, when set, names the other form of a path template (Huntress:
	// /v1/accounts/{account_id}/agents is /v1/agents); an operation whose
	// twin the spec has too, with the same method, is one operation with
	// both templates. "": none.
	Twin func(path string) string
}

// methodOrder orders a path's operations.
var methodOrder = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}

// FromSpec reads the operations of a Swagger 2.0 or OpenAPI 3.x document
// (JSON or YAML): one per method and path template, named after its
// summary (Name), else its operationId. It runs at load time only.
func FromSpec(data []byte, o SpecOptions) ([]Operation, error) {
	doc, err := parseSpec(data)
	if err != nil {
		return nil, err
	}
	base := ""
	if len(doc.Servers) > 0 {
		u, err := url.Parse(doc.Servers[0].URL)
		if err != nil {
			return nil, fmt.Errorf("servers[0].url: %w", err)
		}
		base = strings.TrimSuffix(u.Path, "/")
	}
	urlPath := strings.TrimSuffix(o.URLPath, "/")
	type raw struct {
		method, path, summary, id string
	}
	var all []raw
	have := map[string]bool{} // method + " " + path
	for p, item := range doc.Paths.Map() {
		full := base + p
		if !strings.HasPrefix(full, urlPath+"/") {
			return nil, fmt.Errorf("path %s: the spec's base path %q and the upstream URL's path %q disagree", p, base, o.URLPath)
		}
		rel := strings.TrimPrefix(full, urlPath)
		for m, op := range item.Operations() {
			m = strings.ToUpper(m)
			all = append(all, raw{m, rel, op.Summary, op.OperationID})
			have[m+" "+rel] = true
		}
	}
	// One order whatever the map's: by the first form's path, then method.
	sortKey := func(r raw) string {
		if o.Twin != nil {
			if t := o.Twin(r.path); t != "" && have[r.method+" "+t] {
				return t
			}
		}
		return r.path
	}
	slices.SortFunc(all, func(a, b raw) int {
		if c := strings.Compare(sortKey(a), sortKey(b)); c != 0 {
			return c
		}
		if c := slices.Index(methodOrder, a.method) - slices.Index(methodOrder, b.method); c != 0 {
			return c
		}
		// The form the key names (the twin) first: it holds the other.
		if ka, kb := a.path == sortKey(a), b.path == sortKey(b); ka != kb {
			if ka {
				return -1
			}
			return 1
		}
		return strings.Compare(a.path, b.path)
	})
	var ops []Operation
	index := map[string]int{} // method + " " + path of a first form
	names := map[string]bool{}
	for _, r := range all {
		if o.Twin != nil {
			if t := o.Twin(r.path); t != "" && have[r.method+" "+t] {
				// The twin (sorted first) holds this form too.
				if i, ok := index[r.method+" "+t]; ok {
					ops[i].Paths = append(ops[i].Paths, r.path)
					continue
				}
			}
		}
		name := Name(r.summary)
		if name == "" || names[name] {
			name = Name(r.id)
		}
		if name == "" || names[name] {
			return nil, fmt.Errorf("%s %s: no summary or operationId that names it apart from the others", r.method, r.path)
		}
		names[name] = true
		tier := Read
		if r.method != "GET" && r.method != "HEAD" {
			tier = Admin
		}
		index[r.method+" "+r.path] = len(ops)
		ops = append(ops, Operation{Name: name, Tier: tier, Method: r.method, Paths: []string{r.path}})
	}
	for name, t := range o.Tiers {
		i := slices.IndexFunc(ops, func(op Operation) bool { return op.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("tiers: no operation named %s in the spec", name)
		}
		ops[i].Tier = t
	}
	return ops, nil
}

// parseSpec reads a Swagger 2.0 document (converted to OpenAPI 3) or an
// OpenAPI 3.x one, JSON or YAML.
func parseSpec(data []byte) (*openapi3.T, error) {
	var head struct {
		Swagger string `yaml:"swagger"`
		OpenAPI string `yaml:"openapi"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("not JSON or YAML: %w", err)
	}
	switch {
	case strings.HasPrefix(head.Swagger, "2."):
		var tree any
		if err := yaml.Unmarshal(data, &tree); err != nil {
			return nil, err
		}
		js, err := json.Marshal(tree)
		if err != nil {
			return nil, fmt.Errorf("swagger document: %w", err)
		}
		var v2 openapi2.T
		if err := json.Unmarshal(js, &v2); err != nil {
			return nil, fmt.Errorf("swagger document: %w", err)
		}
		doc, err := openapi2conv.ToV3(&v2)
		if err != nil {
			return nil, fmt.Errorf("swagger document: %w", err)
		}
		return doc, nil
	case strings.HasPrefix(head.OpenAPI, "3."):
		loader := openapi3.NewLoader()
		loader.IsExternalRefsAllowed = false
		doc, err := loader.LoadFromData(data)
		if err != nil {
			return nil, fmt.Errorf("openapi document: %w", err)
		}
		return doc, nil
	}
	return nil, errors.New(`neither "swagger: 2.0" nor "openapi: 3.x"`)
}
