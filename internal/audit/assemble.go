package audit

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// Several replicas each write their own trail, in files named alike. The
// files of a trail are put back in order by their hash links: each file's
// first prev is the hash of another file's last line. An audit_file_opened
// event at the head of every file says whose it is.

// FileEnds is what a file's first and last records say.
type FileEnds struct {
	Name string
	// Replica is the audit_file_opened event's at the file's head ("":
	// none, a file from before replicas were named).
	Replica  string
	FirstSeq uint64
	// FirstPrev is the first record's prev (HasPrev false for a chain's
	// very first record).
	FirstPrev [sha256.Size]byte
	HasPrev   bool
	LastSeq   uint64
	LastHash  [sha256.Size]byte
	// Records: the file holds a record.
	Records bool
}

// ReadEnds reads the ends of the file at path: its first line, and its
// last, read back from its end. r, when not nil, is read whole instead (a
// gzipped file, through its reader).
func ReadEnds(path string, r io.Reader) (FileEnds, error) {
	e := FileEnds{Name: path}
	if r != nil {
		first := true
		err := ScanTrail(r, nil, func(_ int, l *Line, _ *struct{}) error {
			if !l.Complete {
				return nil // a torn final line: verify names it
			}
			if first {
				first = false
				if err := e.head(l.Bytes); err != nil {
					return err
				}
			}
			e.LastHash, e.Records = l.Hash, true
			e.LastSeq = l.Seq
			if !l.Fast {
				var s struct {
					Seq uint64 `json:"seq"`
				}
				_ = json.Unmarshal(l.Bytes, &s)
				e.LastSeq = s.Seq
			}
			return nil
		})
		return e, err
	}
	f, err := os.Open(path)
	if err != nil {
		return e, err
	}
	defer f.Close()
	line, _, err := readLine(bufio.NewReaderSize(f, 64<<10))
	if err != nil || line == nil {
		return e, err
	}
	if err := e.head(line); err != nil {
		return e, err
	}
	t, err := readTail(f)
	if err != nil || t.last == nil {
		return e, err
	}
	var s struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(t.last, &s) != nil || s.Seq == 0 {
		return e, fmt.Errorf("%s: its last line is not an audit record", path)
	}
	e.LastSeq, e.LastHash, e.Records = s.Seq, sha256.Sum256(t.last), true
	return e, nil
}

// head reads the first record.
func (e *FileEnds) head(line []byte) error {
	var h struct {
		Seq   uint64 `json:"seq"`
		Prev  string `json:"prev"`
		Event *struct {
			Name    string `json:"name"`
			Replica string `json:"replica"`
		} `json:"event"`
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Seq == 0 {
		return fmt.Errorf("%s: its first line is not an audit record", e.Name)
	}
	e.FirstSeq = h.Seq
	e.FirstPrev, e.HasPrev = ParsePrev(h.Prev)
	if h.Event != nil && h.Event.Name == EventFileOpened {
		e.Replica = h.Event.Replica
	}
	return nil
}

// TrailChain is one replica's files, in order.
type TrailChain struct {
	Replica string
	Files   []int // indices into the ends given to Chains
}

// Hole is where a replica's chain is missing files.
type Hole struct {
	Replica             string
	After, Before       string // the files on either side
	AfterSeq, BeforeSeq uint64
}

func (h Hole) Error() string {
	r := h.Replica
	if r == "" {
		r = "(unnamed)"
	}
	if h.After == "" {
		return fmt.Sprintf("%s (starts at seq %d) follows none of the files given, and names no replica: files are missing before it", h.Before, h.BeforeSeq)
	}
	return fmt.Sprintf("replica %s: a hole between %s (ends at seq %d) and %s (starts at seq %d): files are missing", r, h.After, h.AfterSeq, h.Before, h.BeforeSeq)
}

// Chains puts files in order by their hash links and groups them by
// replica: one chain per replica. A replica whose files do not link into
// one chain has a hole, named in holes; its chain then holds every piece,
// in seq order. A file given twice (two files with the same first line's
// predecessor) is an error.
func Chains(ends []FileEnds) (chains []TrailChain, holes []Hole, err error) {
	byLast := map[[sha256.Size]byte]int{}
	for i, e := range ends {
		if e.Records {
			byLast[e.LastHash] = i
		}
	}
	pred := make([]int, len(ends))
	succ := map[int]int{}
	for i, e := range ends {
		pred[i] = -1
		if !e.Records || !e.HasPrev {
			continue
		}
		if j, ok := byLast[e.FirstPrev]; ok && j != i && ends[j].LastSeq+1 == e.FirstSeq {
			if k, dup := succ[j]; dup {
				return nil, nil, fmt.Errorf("%s and %s both follow %s: a file is given twice", ends[k].Name, e.Name, ends[j].Name)
			}
			pred[i], succ[j] = j, i
		}
	}
	// Segments: from each file without a predecessor, along the links.
	type segment struct {
		files   []int
		replica string
	}
	var segs []segment
	for i, e := range ends {
		if !e.Records || pred[i] >= 0 {
			continue
		}
		s := segment{}
		for j, ok := i, true; ok; j, ok = succ[j] {
			s.files = append(s.files, j)
			if s.replica == "" {
				s.replica = ends[j].Replica
			}
		}
		segs = append(segs, s)
	}
	byReplica := map[string][]segment{}
	var names []string
	for _, s := range segs {
		if _, ok := byReplica[s.replica]; !ok {
			names = append(names, s.replica)
		}
		byReplica[s.replica] = append(byReplica[s.replica], s)
	}
	sort.Strings(names)
	// A piece that names no replica and starts mid-way follows none of
	// the files given: with other pieces beside it, files are missing
	// before it (a trail of one piece may start mid-way: older files were
	// not given).
	if len(segs) > 1 {
		for _, s := range byReplica[""] {
			if first := ends[s.files[0]]; first.HasPrev {
				holes = append(holes, Hole{Before: first.Name, BeforeSeq: first.FirstSeq})
			}
		}
	}
	for _, r := range names {
		ss := byReplica[r]
		sort.Slice(ss, func(a, b int) bool { return ends[ss[a].files[0]].FirstSeq < ends[ss[b].files[0]].FirstSeq })
		c := TrailChain{Replica: r}
		for k, s := range ss {
			if k > 0 {
				prev := ends[ss[k-1].files[len(ss[k-1].files)-1]]
				next := ends[s.files[0]]
				holes = append(holes, Hole{Replica: r, After: prev.Name, AfterSeq: prev.LastSeq, Before: next.Name, BeforeSeq: next.FirstSeq})
			}
			c.Files = append(c.Files, s.files...)
		}
		chains = append(chains, c)
	}
	if len(chains) == 0 && len(ends) > 0 {
		return nil, nil, errors.New("no file holds an audit record")
	}
	return chains, holes, nil
}
