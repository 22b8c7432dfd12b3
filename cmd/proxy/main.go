// Command proxy builds the keybroker binary (make build installs it as
// keybroker; go install names it proxy, after this directory): a
// credential-brokering reverse proxy for security vendors' APIs.
//
//	keybroker [serve] --config FILE             run the proxy (the default)
//	keybroker validate --config FILE [--check-secrets] [--check-upstreams]
//	keybroker hash-key [--stdin]                make a caller key and its SHA-256
//	keybroker audit keygen|keys|verify|report  sign, check and read the audit trail
//	keybroker operations [UPSTREAM]            the vendors' operations and their tiers
//	keybroker policy CALLER | --operation NAME what a caller may call, who may call an operation
//	keybroker version
//	keybroker help [COMMAND]                   the commands, or one command's flags
//
// Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// usageError marks errors that exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		// Bare keybroker: say what it does rather than demand --config.
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	} else if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		cmd, args = "help", nil
	}
	var err error
	switch cmd {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err = serveCmd(ctx, args, stderr, stdout, nil)
	case "validate":
		err = validateCmd(context.Background(), args, stdout)
	case "hash-key":
		err = hashKeyCmd(args, stdin, stdout)
	case "audit":
		err = auditCmd(args, stdout)
	case "credentials":
		err = credentialsCmd(args, stdout)
	case "operations":
		err = operationsCmd(args, stdout)
	case "policy":
		err = policyCmd(args, stdout)
	case "version":
		fmt.Fprintln(stdout, "keybroker", buildVersion())
	case "help":
		err = helpCmd(args, stdin, stdout, stderr)
	default:
		err = usageError{fmt.Errorf("unknown command %q\n%s", cmd, usage)}
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintln(stderr, "keybroker:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitRuntime
}

// helpCmd prints the command list, or one command's synopsis and flags
// (the command itself prints them when asked with -h).
func helpCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return nil
	}
	switch sub := append(args[1:len(args):len(args)], "-h"); args[0] {
	case "serve":
		return serveCmd(context.Background(), sub, stderr, stdout, nil)
	case "validate":
		return validateCmd(context.Background(), sub, stdout)
	case "hash-key":
		return hashKeyCmd(sub, stdin, stdout)
	case "audit":
		return auditCmd(sub, stdout)
	case "credentials":
		return credentialsCmd(sub, stdout)
	case "operations":
		return operationsCmd(sub, stdout)
	case "policy":
		return policyCmd(sub, stdout)
	case "version", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q\n%s", args[0], usage)}
}

// newFlags is a flag set whose -h prints the command's synopsis and its
// flags to out, and ends the command with flag.ErrHelp (exit 0).
func newFlags(name, synopsis string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: keybroker %s\n", synopsis)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(out, "\nflags:")
			printFlags(out, fs)
		}
	}
	return fs
}

// printFlags lists fs's flags as the usage text spells them, with two
// dashes (Go's flag package takes one or two): name, its value's kind,
// what it does and its default.
func printFlags(out io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if kind != "" {
			line += " " + kind
		}
		line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			line += fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintln(out, line)
	})
}

const usage = `usage: keybroker COMMAND [flags]   (keybroker help COMMAND: its flags)

  keybroker [serve] --config FILE               run the proxy
  keybroker validate FILE [--check-secrets] [--check-upstreams] [--env-file F] [--skip-files]
                                               check a configuration (and read every credential;
                                               and open a TLS connection to every upstream)
  keybroker hash-key [--stdin]                  make a new caller key and its key_sha256
                                               (--stdin: hash a key read from standard input)
  keybroker audit keygen                       make a checkpoint signing key (private_key, public_key)
  keybroker audit keys --vault-transit MOUNT/KEY
                                               a Vault transit key's public keys, for --public-keys
  keybroker audit verify FILE... [--public-key K]... [--public-keys F] [--checkpoint CP]
                                               check a trail's chain (rotated files oldest first,
                                               .gz too), its signed checkpoints, the auditor's copy
  keybroker audit report FILE... [--since T] [--until T] [--caller C] [--upstream U]
                             [--format table|csv|json|html] [--public-key K]... [--public-keys F]
                                               counts by caller, upstream and operation, interrupted
                                               calls, lifecycle events; with keys, the signatures too
  keybroker credentials [--admin URL] [--format table|json]
                                               the running instance's credentials: source, version,
                                               expiry, the vendor's last 401 (never a value)
  keybroker operations [UPSTREAM] [--config FILE] [--format table|json]
                                               the vendor's operations: name, tier, method, paths
  keybroker policy CALLER --config FILE         what a caller may call, operation by operation
  keybroker policy --operation NAME --config FILE
                                               the callers that may call an operation
  keybroker version
  keybroker help [COMMAND]

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
`

func loadConfig(fs *flag.FlagSet, args []string) (*config.Config, error) {
	path, err := configArgs(fs, args)
	if err != nil {
		return nil, err
	}
	cfg, _, err := readConfig(path, config.Options{Env: os.LookupEnv})
	return cfg, err
}

// readConfig loads the configuration at path; a bad one is a usage error
// that names the file and every field at fault.
func readConfig(path string, o config.Options) (*config.Config, []string, error) {
	cfg, unchecked, err := config.LoadWith(path, o)
	if err != nil {
		return nil, nil, usageError{fmt.Errorf("%s:\n  %s", path, strings.ReplaceAll(err.Error(), "\n", "\n  "))}
	}
	return cfg, unchecked, nil
}

// configArgs parses fs's flags and returns the configuration file's path.
func configArgs(fs *flag.FlagSet, args []string) (string, error) {
	path := fs.String("config", "", "configuration file (YAML)")
	// The file may also come first, as the audit commands take theirs:
	// keybroker validate FILE [flags].
	var positional string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		positional, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", flagError(err)
	}
	if fs.NArg() > 0 {
		return "", usageError{fmt.Errorf("unexpected argument %q: give the configuration file once, as FILE or --config FILE", fs.Arg(0))}
	}
	switch {
	case positional != "" && *path != "" && positional != *path:
		return "", usageError{errors.New("two configuration files given: FILE and --config FILE; give one")}
	case positional != "":
		*path = positional
	case *path == "":
		return "", usageError{errors.New("--config FILE is required")}
	}
	return *path, nil
}

func validateCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("validate", "validate FILE [--check-secrets] [--check-upstreams] [--env-file F] [--skip-files]   (or --config FILE)", stdout)
	check := fs.Bool("check-secrets", false, "also read every credential from its source and report its fields and version")
	upstreams := fs.Bool("check-upstreams", false, "also open a TLS connection to every upstream (through the egress proxy) and report it; sends no credential")
	envFile := fs.String("env-file", "", "take ${VAR}s from this file of NAME=value lines (a pod's environment) instead of this shell's")
	skipFiles := fs.Bool("skip-files", false, "check syntax and semantics without opening the files the configuration names (certificates, CAs, JWKS, token and password files)")
	path, err := configArgs(fs, args)
	if err != nil {
		return err
	}
	if *skipFiles && (*check || *upstreams) {
		return usageError{errors.New("--skip-files checks the configuration where its files are not: it cannot go with --check-secrets or --check-upstreams")}
	}
	o := config.Options{Env: os.LookupEnv, SkipFiles: *skipFiles}
	if *envFile != "" {
		if o.Env, err = readEnvFile(*envFile); err != nil {
			return usageError{fmt.Errorf("--env-file %s: %w", *envFile, err)}
		}
	}
	cfg, unchecked, err := readConfig(path, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "configuration OK: %d upstream(s), %d caller(s)\n", len(cfg.Upstreams), len(cfg.Callers))
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	if *skipFiles {
		for _, u := range cfg.Upstreams {
			if f := u.Credential.File; f != nil {
				unchecked = append(unchecked, "upstreams."+u.Name+".credential.file.path: "+f.Path)
			}
		}
		fmt.Fprintf(stdout, "not checked (--skip-files): %d file(s)\n", len(unchecked))
		for _, u := range unchecked {
			fmt.Fprintf(stdout, "  %s\n", u)
		}
	}
	if !*check && !*upstreams {
		return nil
	}
	parts, err := assembleForCheck(ctx, cfg, stdout)
	if err != nil {
		return err
	}
	var errs []error
	if *check {
		errs = append(errs, checkSecrets(ctx, parts, stdout))
	}
	if *upstreams {
		errs = append(errs, checkUpstreams(ctx, parts, stdout))
	}
	return errors.Join(errs...)
}

// readEnvFile reads NAME=value lines (blank lines and # comments
// skipped; "export " and one pair of surrounding quotes allowed) as the
// only environment ${VAR}s are taken from: a variable the file lacks is
// unset, as it would be in the pod, whatever this shell has.
func readEnvFile(path string) (config.LookupEnv, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for n, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("line %d: not NAME=value", n+1) // never the line: it may hold a value
		}
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		vars[name] = value
	}
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, nil
}

func hashKeyCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlags("hash-key", "hash-key [--stdin]", stdout)
	fromStdin := fs.Bool("stdin", false, "hash an existing key read from standard input instead of making one")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if *fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		key := strings.TrimSpace(line)
		if key == "" {
			return usageError{errors.New("no key on standard input")}
		}
		if len(key) < callers.MinKeyLength {
			return usageError{fmt.Errorf("the key is shorter than %d characters: anyone could guess it; `keybroker hash-key` makes a good one", callers.MinKeyLength)}
		}
		fmt.Fprintf(stdout, "key_sha256: %s\n", callers.HashKey(key))
		return nil
	}
	key, sum, err := callers.NewKey()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key:        %s\nkey_sha256: %s\n\n"+
		"Give the key to the caller (it sends Proxy-Authorization: Bearer <key>);\n"+
		"put key_sha256 in its callers: entry. keybroker never stores the key itself.\n", key, sum)
	return nil
}

// flagError passes -h through (exit 0, the usage is printed) and makes
// any other flag error a usage error (exit 2).
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError{err}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}
