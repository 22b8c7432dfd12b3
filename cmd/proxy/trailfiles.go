package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/keybroker/keybroker/internal/audit"
)

// trailChain is one replica's files, in order.
type trailChain struct {
	replica string
	files   []string
}

// trailFiles expands the FILE arguments of audit verify and audit report
// (files, gzipped files, directories: every regular file whose first line
// is an audit record; the others are skipped and named) and puts them in
// order: one chain per replica, by their hash links, whatever order they
// were given in. Holes are where a replica's files do not link.
func trailFiles(args []string, stderr io.Writer) ([]trailChain, []audit.Hole, error) {
	var files []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, nil, err
		}
		if !st.IsDir() {
			files = append(files, a)
			continue
		}
		entries, err := os.ReadDir(a)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				files = append(files, filepath.Join(a, e.Name()))
			}
		}
	}
	if len(files) == 1 {
		return []trailChain{{files: files}}, nil, nil
	}
	var ends []audit.FileEnds
	var named []string
	for _, f := range files {
		e, err := fileEnds(f)
		if err != nil || !e.Records {
			fmt.Fprintf(stderr, "skipped %s: not an audit trail file\n", f)
			continue
		}
		ends = append(ends, e)
		named = append(named, f)
	}
	chains, holes, err := audit.Chains(ends)
	if err != nil {
		return nil, nil, err
	}
	out := make([]trailChain, 0, len(chains))
	for _, c := range chains {
		tc := trailChain{replica: c.Replica}
		for _, i := range c.Files {
			tc.files = append(tc.files, named[i])
		}
		out = append(out, tc)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].replica < out[j].replica })
	return out, holes, nil
}

// fileEnds reads a file's first and last records (a gzipped one whole).
func fileEnds(path string) (audit.FileEnds, error) {
	if !strings.HasSuffix(path, ".gz") {
		return audit.ReadEnds(path, nil)
	}
	f, err := os.Open(path)
	if err != nil {
		return audit.FileEnds{}, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return audit.FileEnds{}, err
	}
	defer zr.Close()
	return audit.ReadEnds(path, zr)
}
