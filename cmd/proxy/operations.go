package main

// operations.go: keybroker operations and keybroker policy, the security
// team's questions in the vendor's own terms, answered from the
// configuration file (no running instance needed).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/operations"
)

// catalogued is an upstream and its operation catalogue.
type catalogued struct {
	upstream string
	cat      *operations.Catalogue
}

// catalogues are the configuration's upstreams with a catalogue, or, with
// no configuration, the presets'.
func catalogues(cfg *config.Config) []catalogued {
	var out []catalogued
	if cfg == nil {
		for _, p := range []string{"huntress", "infocyte"} {
			out = append(out, catalogued{p, operations.Preset(p)})
		}
		return out
	}
	for _, u := range cfg.Upstreams {
		if c := cfg.Catalogue(u.Name); c != nil {
			out = append(out, catalogued{u.Name, c})
		}
	}
	return out
}

// operationJSON is one operation in --format json.
type operationJSON struct {
	Upstream string   `json:"upstream"`
	Name     string   `json:"name"`
	Tier     string   `json:"tier"`
	Method   string   `json:"method"`
	Paths    []string `json:"paths"`
	Aliases  []string `json:"aliases,omitempty"`
}

func operationsCmd(args []string, stdout io.Writer) error {
	fs := newFlags("operations", "operations [UPSTREAM] [--config FILE] [--format table|json]", stdout)
	path := fs.String("config", "", "configuration file: its upstreams' catalogues (default: the huntress and infocyte presets')")
	format := fs.String("format", "table", "table or json")
	var upstream string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		upstream, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *format != "table" && *format != "json" {
		return usageError{fmt.Errorf("--format %q: table or json", *format)}
	}
	var cfg *config.Config
	if *path != "" {
		var err error
		if cfg, _, err = readConfig(*path, config.Options{Env: os.LookupEnv}); err != nil {
			return err
		}
	}
	all := catalogues(cfg)
	if upstream != "" {
		i := slices.IndexFunc(all, func(c catalogued) bool { return c.upstream == upstream })
		if i < 0 {
			names := make([]string, len(all))
			for j, c := range all {
				names[j] = c.upstream
			}
			return usageError{fmt.Errorf("no upstream %q with an operation catalogue (those with one: %s)", upstream, strings.Join(names, ", "))}
		}
		all = all[i : i+1]
	}
	var rows []operationJSON
	for _, c := range all {
		for _, op := range c.cat.Operations() {
			paths := op.Paths
			if c.cat.Fallback(op) {
				paths = []string{"(any other path)"}
			}
			rows = append(rows, operationJSON{c.upstream, op.Name, string(op.Tier), op.Method, paths, op.Aliases})
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tOPERATION\tTIER\tMETHOD\tPATHS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Upstream, r.Name, r.Tier, r.Method, strings.Join(r.Paths, " "))
	}
	return tw.Flush()
}

// verdict is what a caller may do with one operation.
type verdict struct {
	state string // may, partly, may not
	note  string // partly: what is not covered
}

// judge asks the caller's policy about op: every path form, with two
// values in each parameter that no rule names, and with the values the
// caller's own path patterns name at that place (/v1/agents/7 names 7). A
// form allowed for every value is covered; for some values only, or some
// forms and not others, the operation is "partly".
func judge(id callers.Identity, rules []config.AllowRule, upstream string, cat *operations.Catalogue, op operations.Operation) verdict {
	forms := op.Paths
	if cat.Fallback(op) {
		forms = []string{"/kb-any-path"}
	}
	method := op.Method
	if method == "*" {
		method = "POST"
	}
	allows := func(path string) bool {
		return id.Allow(callers.Action{Upstream: upstream, Method: method, Path: path, Operation: op.Name, Tier: string(op.Tier)}).Allowed
	}
	var allowed, denied []string
	some := false
	for _, tmpl := range forms {
		n := 0
		for _, v := range []string{"kb-sample-1", "kb-sample-2"} {
			if allows(operations.Fill(tmpl, v)) {
				n++
			}
		}
		named := false
		for _, v := range namedValues(rules, upstream, tmpl) {
			named = named || allows(operations.Fill(tmpl, v))
		}
		switch {
		case n == 2:
			allowed = append(allowed, tmpl)
		case n == 1 || named:
			some = true
			denied = append(denied, tmpl+" (some values of its parameters only)")
		default:
			denied = append(denied, tmpl)
		}
	}
	switch {
	case len(denied) == 0:
		return verdict{state: "may"}
	case len(allowed) == 0 && !some:
		return verdict{state: "may not"}
	}
	return verdict{state: "partly", note: "not " + strings.Join(denied, ", ")}
}

// namedValues are the literal segments the caller's path patterns on
// upstream put where tmpl has a parameter.
func namedValues(rules []config.AllowRule, upstream, tmpl string) []string {
	ts := strings.Split(tmpl, "/")
	var out []string
	for _, r := range rules {
		if r.Upstream != upstream {
			continue
		}
		for _, p := range r.Paths {
			for i, seg := range strings.Split(p, "/") {
				if i < len(ts) && strings.Contains(ts[i], "{") && seg != "*" && seg != "**" && seg != "" {
					out = append(out, seg)
				}
			}
		}
	}
	return out
}

// rulesOf are the allow rules of the caller named name.
func rulesOf(cfg *config.Config, name string) []config.AllowRule {
	for _, c := range cfg.Callers {
		if c.Name == name {
			return c.Allow
		}
	}
	return nil
}

func policyCmd(args []string, stdout io.Writer) error {
	fs := newFlags("policy", "policy CALLER --config FILE | policy --operation NAME [--upstream U] --config FILE", stdout)
	opName := fs.String("operation", "", "list the callers that may call this operation")
	only := fs.String("upstream", "", "only this upstream")
	var callerName string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		callerName, args = args[0], args[1:]
	}
	path, err := configArgs(fs, args)
	if err != nil {
		return err
	}
	if (callerName == "") == (*opName == "") {
		return usageError{errors.New("give a CALLER, or --operation NAME")}
	}
	cfg, _, err := readConfig(path, config.Options{Env: os.LookupEnv})
	if err != nil {
		return err
	}
	reg, err := assemble.Callers(cfg)
	if err != nil {
		return err
	}
	all := catalogues(cfg)
	if *only != "" {
		all = slices.DeleteFunc(all, func(c catalogued) bool { return c.upstream != *only })
		if len(all) == 0 {
			return usageError{fmt.Errorf("no upstream %q with an operation catalogue", *only)}
		}
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	if callerName != "" {
		id, ok := reg.Named(callerName)
		if !ok {
			names := make([]string, len(cfg.Callers))
			for i, c := range cfg.Callers {
				names[i] = c.Name
			}
			return usageError{fmt.Errorf("no caller %q (callers: %s)", callerName, strings.Join(names, ", "))}
		}
		fmt.Fprintf(tw, "UPSTREAM\tOPERATION\tTIER\t%s\n", strings.ToUpper(callerName))
		for _, c := range all {
			for _, op := range c.cat.Operations() {
				v := judge(id, rulesOf(cfg, callerName), c.upstream, c.cat, op)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.upstream, op.Name, op.Tier, strings.TrimSpace(v.state+" "+v.note))
			}
		}
		return nil
	}
	found := false
	fmt.Fprintln(tw, "UPSTREAM\tOPERATION\tTIER\tCALLER\tMAY")
	for _, c := range all {
		op, ok := c.cat.Lookup(*opName)
		if !ok {
			continue
		}
		found = true
		for _, cl := range cfg.Callers {
			id, _ := reg.Named(cl.Name)
			if v := judge(id, cl.Allow, c.upstream, c.cat, op); v.state != "may not" {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.upstream, op.Name, op.Tier, cl.Name, strings.TrimSpace(v.state+" "+v.note))
			}
		}
	}
	if !found {
		return usageError{fmt.Errorf("no upstream has an operation %q (keybroker operations lists them)", *opName)}
	}
	return nil
}
