package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/audit/report"
	"github.com/keybroker/keybroker/internal/secrets"
)

func auditCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		if len(args) > 0 {
			fmt.Fprint(stdout, auditUsage)
			return flag.ErrHelp
		}
		return usageError{errors.New("usage: keybroker audit keygen | keys --vault-transit MOUNT/KEY | verify FILE... | report FILE...")}
	}
	switch args[0] {
	case "keygen":
		if err := newFlags("audit keygen", "audit keygen", stdout).Parse(args[1:]); err != nil {
			return flagError(err)
		}
		seed, pub, err := audit.NewSigningKey()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "private_key: %s\npublic_key: %s\n", seed, pub)
		return nil
	case "keys":
		return auditKeys(args[1:], stdout, os.Stderr)
	case "verify":
		return auditVerify(args[1:], stdout)
	case "report":
		return auditReport(args[1:], stdout)
	}
	return usageError{fmt.Errorf("unknown audit command %q: keygen, keys, verify or report", args[0])}
}

// auditKeys writes the public keys of every version of a Vault transit
// key in the file format audit verify --public-keys reads, with a
// "# version N" comment before each. It reads VAULT_ADDR and VAULT_TOKEN
// as the vault CLI does.
func auditKeys(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit keys", "audit keys --vault-transit MOUNT/KEY   (VAULT_ADDR and VAULT_TOKEN from the environment)", stdout)
	ref := fs.String("vault-transit", "", "the transit key: its mount, then its name (transit/keybroker-audit)")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	i := strings.LastIndexByte(*ref, '/')
	if i <= 0 || i == len(*ref)-1 {
		return usageError{errors.New("--vault-transit MOUNT/KEY is required (transit/keybroker-audit)")}
	}
	addr, token := os.Getenv("VAULT_ADDR"), os.Getenv("VAULT_TOKEN")
	if addr == "" || token == "" {
		return usageError{errors.New("set VAULT_ADDR and VAULT_TOKEN (a token that may read " + (*ref)[:i] + "/keys/" + (*ref)[i+1:] + ")")}
	}
	v, err := secrets.NewVault(secrets.VaultOptions{Address: addr, Method: "token", Token: token})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := v.Login(ctx); err != nil {
		return err
	}
	k, err := v.Transit((*ref)[:i], (*ref)[i+1:]).Read(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# the public keys of Vault transit key %s, for keybroker audit verify --public-keys\n", *ref)
	for ver := 1; ver <= k.Latest; ver++ {
		pub, ok := k.Public[ver]
		if !ok {
			fmt.Fprintf(stderr, "keybroker: version %d of %s is trimmed in Vault: its public key cannot be read; keep the file you wrote before the trim\n", ver, *ref)
			continue
		}
		fmt.Fprintf(stdout, "# version %d (key id %s)\n%s\n", ver, audit.KeyID(pub), base64.StdEncoding.EncodeToString(pub))
	}
	return nil
}

const auditUsage = `usage: keybroker audit keygen | keys --vault-transit MOUNT/KEY | verify FILE... | report FILE...
  (keybroker help audit verify, keybroker help audit report: their flags)
`

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// parseInterleaved parses flags that may come before, between or after
// the FILE arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, flagError(err)
		}
		if fs.NArg() == 0 {
			return files, nil
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// openTrail opens the files of a trail in order; .gz files are read
// through gzip. close closes them all.
func openTrail(files []string) ([]audit.Source, func(), error) {
	return openTrailShown(files, nil)
}

// openTrailShown is openTrail with the bytes read counted in p.
func openTrailShown(files []string, p *progress) ([]audit.Source, func(), error) {
	var srcs []audit.Source
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, f)
		r := p.reader(len(srcs)+1, f)
		if strings.HasSuffix(name, ".gz") {
			zr, err := gzip.NewReader(bufio.NewReader(r))
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("%s: %w", name, err)
			}
			closers = append(closers, zr)
			r = zr
		}
		srcs = append(srcs, audit.Source{Name: name, R: r})
	}
	return srcs, closeAll, nil
}

func auditVerify(args []string, stdout io.Writer) error {
	fs := newFlags("audit verify", "audit verify FILE... [--public-key K]... [--public-keys F] [--checkpoint CP]", stdout)
	var keys stringList
	fs.Var(&keys, "public-key", "a public key checkpoints may be signed with (base64; repeatable)")
	keyFile := fs.String("public-keys", "", "a file of public keys, one per line (or public_key: lines)")
	cpFile := fs.String("checkpoint", "", "the auditor's own copy of a later checkpoint (its line from the audit or the operational log)")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return usageError{errors.New("usage: keybroker audit verify FILE... [--public-key K]... [--public-keys F] [--checkpoint CP]")}
	}
	opts := audit.VerifyOptions{}
	if opts.Keys, err = publicKeys(keys, *keyFile); err != nil {
		return err
	}
	if *cpFile != "" {
		cp, err := readCheckpoint(*cpFile)
		if err != nil {
			return usageError{fmt.Errorf("--checkpoint %s: %w", *cpFile, err)}
		}
		opts.Checkpoint = cp
	}
	chains, holes, err := trailFiles(files, os.Stderr)
	if err != nil {
		return err
	}
	var failed []error
	for _, c := range chains {
		o := opts
		if cp := opts.Checkpoint; cp != nil && len(chains) > 1 && cp.Replica != c.replica {
			o.Checkpoint = nil // the auditor's copy is another replica's
		}
		prefix := ""
		if len(chains) > 1 {
			prefix = "replica " + c.replica + ": "
		}
		if err := verifyChain(c.files, o, prefix, stdout); err != nil {
			if len(chains) == 1 {
				return err
			}
			fmt.Fprintf(stdout, "%sFAILED: %v\n", prefix, err)
			failed = append(failed, fmt.Errorf("replica %s: %w", c.replica, err))
		}
	}
	for _, h := range holes {
		fmt.Fprintf(stdout, "FAILED: %v\n", h)
		failed = append(failed, h)
	}
	return errors.Join(failed...)
}

// verifyChain verifies one chain of files and says what it found.
func verifyChain(files []string, opts audit.VerifyOptions, prefix string, stdout io.Writer) error {
	shown := newProgress(files, os.Stderr)
	srcs, closeAll, err := openTrailShown(files, shown)
	if err != nil {
		shown.Done()
		return err
	}
	defer closeAll()
	rep, err := audit.VerifyTrail(srcs, opts)
	shown.Done()
	var ve *audit.VerifyError
	if errors.As(err, &ve) && ve.Torn {
		return fmt.Errorf("%d record(s) intact, then a torn final line: %w", rep.Records, err)
	}
	if err != nil {
		return fmt.Errorf("trail broken after %d good record(s): %w", rep.Records, err)
	}
	fmt.Fprintf(stdout, "%s%d record(s), seq %d to %d, chain intact\n", prefix, rep.Records, rep.FirstSeq, rep.LastSeq)
	switch {
	case !rep.Signed:
		fmt.Fprintf(stdout, "%ssignatures NOT checked (no --public-key): %d checkpoint(s) found\n", prefix, rep.Checkpoints)
	case rep.Checkpoints == 0:
		fmt.Fprintf(stdout, "%sWARNING: no signed checkpoint in the trail: nothing is covered by a signature\n", prefix)
	default:
		fmt.Fprintf(stdout, "%s%d checkpoint(s), every signature valid; records up to seq %d are signed\n", prefix, rep.Checkpoints, rep.Covered)
	}
	if rep.Signed && rep.Checkpoints > 0 && rep.Uncovered > 0 {
		fmt.Fprintf(stdout, "%sWARNING: %d record(s) after the last checkpoint are not yet covered by a signature\n", prefix, rep.Uncovered)
	}
	if rep.Restarts > 0 {
		fmt.Fprintf(stdout, "%snote: the checkpoint chain starts again %d time(s) (a restart that did not find the previous checkpoint)\n", prefix, rep.Restarts)
	}
	if opts.Checkpoint != nil {
		fmt.Fprintf(stdout, "%sthe auditor's checkpoint (seq %d) is in the trail\n", prefix, opts.Checkpoint.Seq)
	}
	return nil
}

// publicKeys reads the keys of --public-key (repeated) and --public-keys
// FILE (one per line, or public_key: lines; # comments), by key id; nil
// when none is given.
func publicKeys(keys []string, keyFile string) (map[string]ed25519.PublicKey, error) {
	if keyFile != "" {
		raw, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(string(raw), "\n") {
			if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "public_key:")); l != "" && !strings.HasPrefix(l, "#") {
				keys = append(keys, l)
			}
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	out := map[string]ed25519.PublicKey{}
	for _, k := range keys {
		pub, err := audit.ParsePublicKey(k)
		if err != nil {
			return nil, usageError{fmt.Errorf("--public-key: %w", err)}
		}
		out[audit.KeyID(pub)] = pub
	}
	return out, nil
}

// readCheckpoint reads the auditor's copy of a checkpoint: the audit line
// of the checkpoint event, or the operational log's entry for it.
func readCheckpoint(path string) (*audit.Checkpoint, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Event *struct {
			Checkpoint *audit.Checkpoint `json:"checkpoint"`
		} `json:"event"`
		Checkpoint *audit.Checkpoint `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(raw))), &doc); err != nil {
		return nil, errors.New("not a checkpoint line (JSON)")
	}
	switch {
	case doc.Event != nil && doc.Event.Checkpoint != nil:
		return doc.Event.Checkpoint, nil
	case doc.Checkpoint != nil:
		return doc.Checkpoint, nil
	}
	return nil, errors.New("no checkpoint in it")
}

func auditReport(args []string, stdout io.Writer) error {
	fs := newFlags("audit report", "audit report FILE... [--since T] [--until T] [--caller C] [--upstream U] [--format F] [--public-key K]... [--public-keys F]", stdout)
	var keys stringList
	fs.Var(&keys, "public-key", "a public key checkpoints may be signed with (base64; repeatable): the report checks every signature, as verify does")
	keyFile := fs.String("public-keys", "", "a file of public keys, one per line (or public_key: lines)")
	since := fs.String("since", "", "count records from this time (RFC 3339, or a date 2006-01-02)")
	until := fs.String("until", "", "count records before this time (RFC 3339, or a date)")
	caller := fs.String("caller", "", "only this caller")
	upstream := fs.String("upstream", "", "only this upstream")
	format := fs.String("format", report.FormatTable, "table, csv, json or html")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return usageError{errors.New("usage: keybroker audit report FILE... [--since T] [--until T] [--caller C] [--upstream U] [--format table|csv|json|html] [--public-key K]... [--public-keys F]")}
	}
	f := report.Filter{Caller: *caller, Upstream: *upstream}
	for _, t := range []struct {
		flag string
		v    string
		dst  *time.Time
	}{{"--since", *since, &f.Since}, {"--until", *until, &f.Until}} {
		if t.v == "" {
			continue
		}
		at, err := time.Parse(time.RFC3339, t.v)
		if err != nil {
			if at, err = time.Parse("2006-01-02", t.v); err != nil {
				return usageError{fmt.Errorf("%s %q: want RFC 3339 (2026-07-01T00:00:00Z) or a date (2026-07-01)", t.flag, t.v)}
			}
		}
		*t.dst = at
	}
	switch *format {
	case report.FormatTable, report.FormatCSV, report.FormatJSON, report.FormatHTML:
	default:
		return usageError{fmt.Errorf("--format %q: table, csv, json or html", *format)}
	}
	pubs, err := publicKeys(keys, *keyFile)
	if err != nil {
		return err
	}
	chains, holes, err := trailFiles(files, os.Stderr)
	if err != nil {
		return err
	}
	var all []string
	for _, c := range chains {
		all = append(all, c.files...)
	}
	shown := newProgress(all, os.Stderr)
	var trails []report.ReplicaTrail
	for _, c := range chains {
		srcs, closeAll, err := openTrailShown(c.files, shown)
		if err != nil {
			shown.Done()
			return err
		}
		defer closeAll()
		trails = append(trails, report.ReplicaTrail{Replica: c.replica, Sources: srcs})
	}
	rep := report.New(f)
	err = rep.ReadReplicas(trails)
	shown.Done()
	if err != nil {
		return err
	}
	for _, h := range holes {
		rep.Chain.Intact = false
		if rep.Chain.Break == "" {
			rep.Chain.Break = h.Error()
		}
	}
	if pubs != nil {
		// The signatures, as verify checks them: a second pass.
		again, closeAgain, err := openTrail(files)
		if err != nil {
			return err
		}
		defer closeAgain()
		vr, verr := audit.VerifyTrail(again, audit.VerifyOptions{Keys: pubs})
		rep.SetSignatures(vr, verr)
	}
	if err := rep.Render(stdout, *format); err != nil {
		return err
	}
	switch {
	case !rep.Chain.Intact:
		// As verify: the report is written, and the exit status says the
		// files are not one intact trail.
		return fmt.Errorf("the files do not form one hash chain: %s", rep.Chain.Break)
	case rep.Chain.Signatures != nil && !rep.Chain.Signatures.Valid:
		return fmt.Errorf("the signatures do not hold: %s", rep.Chain.Signatures.Problem)
	}
	return nil
}
