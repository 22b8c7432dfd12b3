package ratelimit

import "math"

// Share is one caller's part of an upstream quota (rate_limit.shares).
type Share struct {
	// Reserve slots of every window are this caller's alone: it uses them
	// first, and no other caller can take them, even when they are idle.
	Reserve int
	// Max caps the slots the caller holds in a window (0: no cap).
	Max int
	// Weight orders waiting callers: shared slots that free up go to them
	// in proportion to their weights (fair queuing). Default 1.
	Weight float64
}

// Shares is how an upstream quota is split between callers: each
// caller's reserve, cap and weight. A caller without an entry has no
// reserve, no cap and weight 1. It is immutable; a reload makes a new one.
type Shares struct {
	byCaller map[string]Share
	reserved int
}

// NewShares returns the split of a quota; weights below or at 0 become 1.
func NewShares(byCaller map[string]Share) *Shares {
	s := &Shares{byCaller: make(map[string]Share, len(byCaller))}
	for name, sh := range byCaller {
		if sh.Weight <= 0 {
			sh.Weight = 1
		}
		s.byCaller[name] = sh
		s.reserved += sh.Reserve
	}
	return s
}

// Of returns caller's share.
func (s *Shares) Of(caller string) Share {
	if s != nil {
		if sh, ok := s.byCaller[caller]; ok {
			return sh
		}
	}
	return Share{Weight: 1}
}

// Reserved is the sum of the reserves: the slots of every window that are
// not shared.
func (s *Shares) Reserved() int {
	if s == nil {
		return 0
	}
	return s.reserved
}

// Callers lists the callers with a share, for keys and metrics.
func (s *Shares) Callers() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.byCaller))
	for name := range s.byCaller {
		out = append(out, name)
	}
	return out
}

// Scaled is the split one of replicas keeps when each keeps requests /
// replicas of the quota locally (Redis unreachable): each reserve
// ceil(reserve / replicas), scaled down together when they would not fit
// in perReplica, and each max max / replicas (never more in total), at
// least 1.
func (s *Shares) Scaled(replicas, perReplica int) *Shares {
	if s == nil || replicas <= 1 {
		return s
	}
	out := map[string]Share{}
	total := 0
	for name, sh := range s.byCaller {
		sh.Reserve = ceilDiv(sh.Reserve, replicas)
		if sh.Max > 0 {
			sh.Max = max(1, sh.Max/replicas)
		}
		total += sh.Reserve
		out[name] = sh
	}
	if total > perReplica && total > 0 {
		f := float64(perReplica) / float64(total)
		for name, sh := range out {
			sh.Reserve = int(math.Floor(float64(sh.Reserve) * f))
			out[name] = sh
		}
	}
	return NewShares(out)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
