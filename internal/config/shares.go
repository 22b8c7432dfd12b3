package config

import (
	"maps"
	"slices"
)

// checkShares checks an upstream quota's shares: callers that exist,
// reserves that fit in the quota (they may take all of it; then nothing
// is shared), caps and weights that mean something.
func checkShares(e *errs, path string, rl *RateLimit, callers map[string]bool) {
	if rl.Requests <= 0 {
		e.add(path, "needs a quota: set requests and per")
		return
	}
	total := 0
	for _, name := range slices.Sorted(maps.Keys(rl.Shares)) {
		sh := rl.Shares[name]
		p := path + "." + name
		if !callers[name] {
			e.add(p, "no caller named %s", quote(name))
		}
		switch {
		case sh.Reserve < 0:
			e.add(p+".reserve", "must not be negative")
		case sh.Max < 0:
			e.add(p+".max", "must not be negative")
		case sh.Max > rl.Requests:
			e.add(p+".max", "must be at most requests (%d)", rl.Requests)
		case sh.Max > 0 && sh.Reserve > sh.Max:
			e.add(p+".reserve", "must be at most max (%d)", sh.Max)
		}
		if sh.Weight < 0 {
			e.add(p+".weight", "must be positive")
		}
		if sh.Reserve == 0 && sh.Max == 0 && sh.Weight == 0 {
			e.add(p, "set reserve, max or weight")
		}
		total += max(sh.Reserve, 0)
	}
	if total > rl.Requests {
		e.add(path, "the reserves add up to %d, more than requests (%d)", total, rl.Requests)
	}
}
