// Command open measures the latency callers feel: an open-loop load
// generator. Calls arrive as a Poisson process at a given rate, each on its
// own goroutine, whether or not earlier calls have been answered, and each
// call's latency is measured from its intended start, the moment the
// arrival process scheduled it. A target that stalls therefore shows the
// stall in every call that arrived meanwhile (no coordinated omission, the
// flaw of closed-loop tools such as wrk, which stop sending while they
// wait).
//
// Targets are measured interleaved, like bench/ab.sh, and finely: a round
// gives each target -d of calls in slices of -slice, taken in turn and in
// mirrored order (A B, B A, A B, ...), each pair of slices with the same
// arrival schedule. A machine whose speed drifts during a round (another
// tenant, the CPU's clock, a cache warming) then weighs on every target
// alike, where one long run each would hand the drift to whichever target
// came second. A slice starts when the previous one's calls have all been
// answered. It prints,
// per round, each target's p50, p99 and p99.9, and at the end the medians
// over rounds of each target's figures and of the per-round ratios to the
// first target, with their spread (min-max). The generator's own lag (how
// late a call actually started) is printed too: when its p99 is not far
// below the targets' latencies, the machine is too busy to judge.
//
//	open [-rate 300] [-d 10s] [-slice 1s] [-rounds 5] [-warmup 1s] [-H 'Name: value']... name=http://host:port/path...
//
// bench/ab.sh runs it when KB_BENCH_RATE is set.
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

// result is one target's run in one round.
type result struct {
	p50, p99, p999 time.Duration
	lag50, lag99   time.Duration // the generator's lag: how late calls started
	calls, failed  int
}

type target struct {
	name, url string
	runs      []result
}

func main() {
	rate := flag.Float64("rate", 300, "mean arrivals per second (Poisson)")
	dur := flag.Duration("d", 10*time.Second, "measured time per target per round")
	rounds := flag.Int("rounds", 5, "rounds (each runs every target once)")
	slice := flag.Duration("slice", time.Second, "the targets take turns every slice of this long")
	warmup := flag.Duration("warmup", time.Second, "unmeasured time at the same rate for each target before each round")
	timeout := flag.Duration("timeout", 10*time.Second, "a call not answered by then counts as failed")
	var hdrs headers
	flag.Var(&hdrs, "H", "request header (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 || *rate <= 0 || *rounds < 1 || *slice <= 0 || *slice > *dur {
		fmt.Fprintln(os.Stderr, "usage: open [-rate R] [-d D] [-slice S] [-rounds N] [-H 'Name: value']... name=url...")
		os.Exit(2)
	}
	var ts []*target
	for _, a := range flag.Args() {
		name, url, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(url, "http") {
			fatal(fmt.Errorf("target %q: want name=http://host:port/path", a))
		}
		ts = append(ts, &target{name: name, url: url})
	}
	h := http.Header{}
	for _, v := range hdrs {
		k, val, ok := strings.Cut(v, ":")
		if !ok {
			fatal(fmt.Errorf("header %q: want 'Name: value'", v))
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(val))
	}
	// Each target gets its own pool, as many connections as the calls in
	// flight need: independent callers do not queue behind each other.
	clients := map[string]*http.Client{}
	for _, t := range ts {
		clients[t.name] = &http.Client{Timeout: *timeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: 4096, DisableCompression: true, IdleConnTimeout: time.Minute}}
	}
	// The dispatcher keeps its thread: its sleeps block the thread, not a
	// processor another goroutine could use.
	runtime.LockOSThread()
	slices := int(*dur / *slice)
	fmt.Printf("open loop, Poisson arrivals at %.0f calls/s, %s per target per round in %d slices taken in turn, %d rounds\n",
		*rate, *slice*time.Duration(slices), slices, *rounds)
	for i := 0; i < *rounds; i++ {
		seed := uint64(time.Now().UnixNano())
		for _, t := range ts {
			run(clients[t.name], t.url, h, *rate, *warmup, seed) // unmeasured
		}
		got := make([]sample, len(ts))
		for k := 0; k < slices; k++ {
			for j := range ts {
				if (i+k)%2 == 1 {
					j = len(ts) - 1 - j // mirrored: A B, B A, ...
				}
				got[j].add(run(clients[ts[j].name], ts[j].url, h, *rate, *slice, seed+uint64(k)+1))
			}
		}
		line := fmt.Sprintf("round %d:", i+1)
		for j, t := range ts {
			r := got[j].result()
			t.runs = append(t.runs, r)
			line += fmt.Sprintf("  %s p50 %s p99 %s p99.9 %s (lag p50 %s p99 %s, %d calls, %d failed)",
				t.name, us(r.p50), us(r.p99), us(r.p999), us(r.lag50), us(r.lag99), r.calls, r.failed)
		}
		fmt.Println(line)
	}
	summarize(ts)
}

// sample is one target's calls in a round: how long each took from its
// intended start, how late each started, and how many failed.
type sample struct {
	lat, lag []time.Duration
	failed   int
}

func (s *sample) add(o sample) {
	s.lat = append(s.lat, o.lat...)
	s.lag = append(s.lag, o.lag...)
	s.failed += o.failed
}

func (s *sample) result() result {
	slices.Sort(s.lat)
	slices.Sort(s.lag)
	return result{p50: pct(s.lat, 0.50), p99: pct(s.lat, 0.99), p999: pct(s.lat, 0.999), lag50: pct(s.lag, 0.50), lag99: pct(s.lag, 0.99),
		calls: len(s.lat), failed: s.failed}
}

// run sends calls to url at Poisson arrivals of the given mean rate for
// d, and returns each call's latency measured from its intended start,
// once all have been answered. The schedule is drawn from seed, so that
// targets given the same seed get the same one.
func run(c *http.Client, url string, h http.Header, rate float64, d time.Duration, seed uint64) sample {
	rng := rand.New(rand.NewPCG(seed, 0x6b657962726f6b72))
	var (
		mu sync.Mutex
		s  sample
		wg sync.WaitGroup
	)
	start := time.Now()
	next := time.Duration(0)
	for {
		next += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if next >= d {
			break
		}
		intended := start.Add(next)
		sleepUntil(intended)
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			ok := call(c, url, h)
			took := time.Since(intended)
			mu.Lock()
			defer mu.Unlock()
			s.lat = append(s.lat, took)
			s.lag = append(s.lag, began.Sub(intended))
			if !ok {
				s.failed++
			}
		}()
	}
	wg.Wait()
	return s
}

// sleepUntil blocks until t. Go's timers wake about a millisecond late on
// an idle runtime (the netpoller's timeout has millisecond granularity),
// as late as the calls being measured take; so the dispatcher sleeps in
// the kernel (clock_nanosleep, tens of microseconds of slack) on a thread
// of its own, and the lag it leaves is printed with every run.
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(d.Nanoseconds())
		_ = syscall.Nanosleep(&ts, nil)
	}
}

// call sends one GET and reads the whole reply; ok is a 200.
func call(c *http.Client, url string, h http.Header) bool {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header = h.Clone()
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// pct is the q-quantile of sorted xs (nearest rank).
func pct(xs []time.Duration, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	i := int(q*float64(len(xs))+0.5) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// summarize prints each target's medians over the rounds, and the median
// (min-max) of the per-round ratios to the first target.
func summarize(ts []*target) {
	base := ts[0]
	fmt.Println("medians over rounds:")
	for _, t := range ts {
		med := func(f func(result) time.Duration) time.Duration {
			xs := make([]time.Duration, len(t.runs))
			for i, r := range t.runs {
				xs[i] = f(r)
			}
			slices.Sort(xs)
			return xs[len(xs)/2]
		}
		line := fmt.Sprintf("  %-10s p50 %s  p99 %s  p99.9 %s", t.name,
			us(med(func(r result) time.Duration { return r.p50 })),
			us(med(func(r result) time.Duration { return r.p99 })),
			us(med(func(r result) time.Duration { return r.p999 })))
		if t != base {
			for _, q := range []struct {
				name string
				f    func(result) time.Duration
			}{{"p50", func(r result) time.Duration { return r.p50 }},
				{"p99", func(r result) time.Duration { return r.p99 }},
				{"p99.9", func(r result) time.Duration { return r.p999 }}} {
				rs := make([]float64, len(t.runs))
				for i := range t.runs {
					rs[i] = float64(q.f(t.runs[i])) / float64(q.f(base.runs[i]))
				}
				slices.Sort(rs)
				line += fmt.Sprintf("  %s/%s %.2f (%.2f-%.2f)", q.name, base.name, rs[len(rs)/2], rs[0], rs[len(rs)-1])
			}
		}
		failed := 0
		for _, r := range t.runs {
			failed += r.failed
		}
		fmt.Printf("%s  failed %d\n", line, failed)
	}
}

func us(d time.Duration) string {
	if d >= 10*time.Millisecond {
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%dus", d.Microseconds())
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "open:", err)
	os.Exit(1)
}
