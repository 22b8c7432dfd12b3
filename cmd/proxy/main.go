// Command proxy is keybroker: a credential-brokering reverse proxy for
// security vendors' APIs.
//
//	proxy [serve] -config FILE             run the proxy (the default)
//	proxy validate -config FILE [--check-secrets]
//	proxy hash-key [-stdin]                make a caller key and its SHA-256
//	proxy audit keygen|verify|report       sign, check and read the audit trail
//	proxy version
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
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err = serveCmd(ctx, args, stderr, nil)
	case "validate":
		err = validateCmd(context.Background(), args, stdout)
	case "hash-key":
		err = hashKeyCmd(args, stdin, stdout)
	case "audit":
		err = auditCmd(args, stdout)
	case "version":
		fmt.Fprintln(stdout, "keybroker", buildVersion())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = usageError{fmt.Errorf("unknown command %q\n%s", cmd, usage)}
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "keybroker:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitRuntime
}

const usage = `usage:
  proxy [serve] -config FILE               run the proxy
  proxy validate -config FILE [--check-secrets] [--check-upstreams]
                                           check a configuration (and read every credential;
                                           and open a TLS connection to every upstream)
  proxy hash-key [-stdin]                  make a new caller key and its key_sha256
                                           (-stdin: hash a key read from standard input)
  proxy audit keygen                       make a checkpoint signing key (private_key, public_key)
  proxy audit verify FILE... [--public-key K]... [--public-keys F] [--checkpoint CP]
                                           check a trail's chain (rotated files oldest first,
                                           .gz too), its signed checkpoints, the auditor's copy
  proxy audit report FILE... [--since T] [--until T] [--caller C] [--upstream U]
                         [--format table|csv|json|html]
                                           counts by caller and upstream, and lifecycle events
  proxy version
`

func loadConfig(fs *flag.FlagSet, args []string) (*config.Config, error) {
	path := fs.String("config", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return nil, usageError{err}
	}
	if *path == "" {
		return nil, usageError{errors.New("-config FILE is required")}
	}
	cfg, err := config.Load(*path, os.LookupEnv)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s:\n  %s", *path, strings.ReplaceAll(err.Error(), "\n", "\n  "))}
	}
	return cfg, nil
}

func validateCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	check := fs.Bool("check-secrets", false, "also read every credential from its source and report its fields and version")
	upstreams := fs.Bool("check-upstreams", false, "also open a TLS connection to every upstream (through the egress proxy) and report it; sends no credential")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "configuration OK: %d upstream(s), %d caller(s)\n", len(cfg.Upstreams), len(cfg.Callers))
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

func hashKeyCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("hash-key", flag.ContinueOnError)
	fromStdin := fs.Bool("stdin", false, "hash an existing key read from standard input instead of making one")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
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

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}
