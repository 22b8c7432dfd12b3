package report

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/keybroker/keybroker/internal/audit"
)

// ReplicaCount is one replica's part of the trail.
type ReplicaCount struct {
	Replica string `json:"replica"`
	Files   int    `json:"files"`
	Records int    `json:"records"`
	Calls   int    `json:"calls"`
}

// ReplicaTrail is one replica's files, in order.
type ReplicaTrail struct {
	Replica string
	Sources []audit.Source
}

// Chain is the hash-chain check of the files a report read.
type Chain struct {
	Files    []FileCount `json:"files"`
	Intact   bool        `json:"intact"`
	Records  int         `json:"records"`
	FirstSeq uint64      `json:"first_seq"`
	LastSeq  uint64      `json:"last_seq"`
	// Break is the first place the chain breaks ("file: line N (seq S):
	// reason"), empty when intact.
	Break string `json:"break,omitempty"`
	// Signatures is the check of the signed checkpoints with the public
	// keys given (audit report --public-key); nil: not checked.
	Signatures *Signatures `json:"signatures,omitempty"`
}

// Signatures is what the public keys said of the trail's checkpoints.
type Signatures struct {
	Valid       bool `json:"valid"`
	Checkpoints int  `json:"checkpoints"`
	// Covered is the last seq a valid signature covers; Uncovered the
	// records after it.
	Covered   uint64 `json:"covered_seq"`
	Uncovered int    `json:"uncovered"`
	// Problem says why they do not hold ("" when valid).
	Problem string `json:"problem,omitempty"`
}

// SetSignatures records a signature check of the trail (audit.VerifyTrail
// with the keys); err is what it found wrong.
func (r *Report) SetSignatures(v audit.VerifyReport, err error) {
	s := &Signatures{Valid: err == nil && v.Checkpoints > 0, Checkpoints: v.Checkpoints, Covered: v.Covered, Uncovered: v.Uncovered}
	switch {
	case err != nil:
		s.Problem = err.Error()
	case v.Checkpoints == 0:
		s.Problem = "no signed checkpoint in the trail: nothing is covered by a signature"
	}
	r.Chain.Signatures = s
}

// FileCount is one file of the trail and how many records it held.
type FileCount struct {
	Name    string `json:"name"`
	Records int    `json:"records"`
}

// ReadTrail streams every record of the sources, oldest file first, into
// the report, and checks as it goes that they form one hash chain (as
// `keybroker audit verify` does without keys). A broken chain is stated in
// Chain, not returned: the report still counts what it read.
func (r *Report) ReadTrail(srcs []audit.Source) error {
	return r.ReadReplicas([]ReplicaTrail{{Sources: srcs}})
}

// ReadReplicas reads several replicas' trails as one report: each
// replica's files form its own hash chain (checked as ReadTrail checks
// one); the rows sum them; Replicas counts each; the notable events merge
// in time order, each naming its replica.
func (r *Report) ReadReplicas(trails []ReplicaTrail) error {
	// decoded is a line as the reader's workers leave it.
	type decoded struct {
		l   line
		err error
	}
	decode := func(l *audit.Line, out *decoded) {
		out.err = decodeLine(l.Bytes, &out.l)
	}
	var total audit.Chain
	for _, tr := range trails {
		r.chain, r.replica = audit.Chain{}, tr.Replica
		rc := ReplicaCount{Replica: tr.Replica}
		for _, src := range tr.Sources {
			fc := FileCount{Name: src.Name}
			err := audit.ScanTrail(src.R, decode, func(n int, al *audit.Line, d *decoded) error {
				seq, prev, hasPrev := al.Seq, al.Prev, al.HasPrev
				if !al.Fast {
					seq = d.l.Seq
					prev, hasPrev = audit.ParsePrev(d.l.Prev)
				}
				if seq == 0 || (d.err == errNotRecord) {
					if !al.Complete {
						r.broken(fmt.Sprintf("%s: line %d (after seq %d): torn final line, not a complete record", src.Name, n, r.chain.LastSeq))
						return errTorn // nothing to count
					}
					return fmt.Errorf("%s: line %d (after seq %d): not an audit record", src.Name, n, r.chain.LastSeq)
				}
				if reason := r.chain.Check(seq, prev, hasPrev); reason != "" {
					r.broken(fmt.Sprintf("%s: line %d (seq %d): %s", src.Name, n, seq, reason))
				}
				r.chain.Advance(seq, al.Hash)
				if d.err != nil {
					return fmt.Errorf("%s: line %d (seq %d): %w", src.Name, n, seq, d.err)
				}
				if d.l.Type == audit.TypeCall {
					rc.Calls++
				}
				r.add(&d.l)
				fc.Records++
				return nil
			})
			if err != nil && !errors.Is(err, errTorn) {
				if !strings.HasPrefix(err.Error(), src.Name+": ") {
					err = fmt.Errorf("%s: %w", src.Name, err) // a read error, or a line too long
				}
				return err
			}
			r.Chain.Files = append(r.Chain.Files, fc)
			rc.Files++
			rc.Records += fc.Records
		}
		if total.Records == 0 || (r.chain.Records > 0 && r.chain.FirstSeq < total.FirstSeq) {
			total.FirstSeq = r.chain.FirstSeq
		}
		total.Records += r.chain.Records
		total.LastSeq = max(total.LastSeq, r.chain.LastSeq)
		if len(trails) > 1 {
			r.Replicas = append(r.Replicas, rc)
		}
	}
	r.Chain.Records, r.Chain.FirstSeq, r.Chain.LastSeq = total.Records, total.FirstSeq, total.LastSeq
	sort.SliceStable(r.Events.Notable, func(i, j int) bool { return r.Events.Notable[i].Time.Before(r.Events.Notable[j].Time) })
	r.Finish()
	return nil
}

// errTorn ends the reading of a file at a torn final line.
var errTorn = errors.New("torn final line")

// broken records the first break of the chain.
func (r *Report) broken(where string) {
	if r.Chain.Intact {
		r.Chain.Intact, r.Chain.Break = false, where
	}
}
