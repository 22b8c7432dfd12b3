// Command seq measures latency one call at a time, interleaved call by
// call: each target gets one keep-alive connection, and round after round
// one request goes to each target in turn (each round starting one target
// further on), the next only once the last has been answered. The drift
// of a shared machine, which moves wrk's per-round figures by several
// percent, then falls on every target alike. It prints each target's
// median, 90th percentile and mean, and its median against the first
// target's (bench/ab.sh runs it when KB_BENCH_SEQ is set).
//
//	seq [-n 20000] [-H 'Name: value']... name=http://host:port/path...
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

type target struct {
	name string
	req  []byte
	conn net.Conn
	br   *bufio.Reader
	lat  []time.Duration
}

func main() {
	n := flag.Int("n", 20000, "requests per target, after 500 to warm up")
	var hdrs headers
	flag.Var(&hdrs, "H", "request header (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: seq [-n N] [-H 'Name: value']... name=url...")
		os.Exit(2)
	}
	var ts []*target
	for _, a := range flag.Args() {
		name, raw, ok := strings.Cut(a, "=")
		u, err := url.Parse(raw)
		if !ok || err != nil || u.Scheme != "http" {
			fatal(fmt.Errorf("target %q: want name=http://host:port/path", a))
		}
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			fatal(err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
		for _, h := range hdrs {
			b.WriteString(h + "\r\n")
		}
		b.WriteString("\r\n")
		ts = append(ts, &target{name: name, req: []byte(b.String()), conn: c, br: bufio.NewReader(c)})
	}
	for i := 0; i < 500; i++ {
		for _, t := range ts {
			t.call()
		}
	}
	for i := 0; i < *n; i++ {
		// Each round starts at the next target, so that none is always
		// the one called right after another.
		for j := range ts {
			t := ts[(i+j)%len(ts)]
			t.lat = append(t.lat, t.call())
		}
	}
	var base float64
	for i, t := range ts {
		slices.Sort(t.lat)
		var sum time.Duration
		for _, l := range t.lat {
			sum += l
		}
		p50 := us(t.lat[len(t.lat)/2])
		if i == 0 {
			base = p50
		}
		fmt.Printf("%-10s p50 %6.1f us  p90 %6.1f us  mean %6.1f us  p50/%s %.3f\n", t.name, p50,
			us(t.lat[len(t.lat)*9/10]), us(sum/time.Duration(len(t.lat))), ts[0].name, p50/base)
	}
}

// call sends one request and reads the whole reply; anything but a 200
// ends the run.
func (t *target) call() time.Duration {
	start := time.Now()
	if _, err := t.conn.Write(t.req); err != nil {
		fatal(fmt.Errorf("%s: %w", t.name, err))
	}
	resp, err := http.ReadResponse(t.br, nil)
	if err != nil {
		fatal(fmt.Errorf("%s: %w", t.name, err))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		fatal(fmt.Errorf("%s: status %d", t.name, resp.StatusCode))
	}
	if resp.Close {
		// The server ends the connection (nginx does after
		// keepalive_requests): a new one, outside the timing.
		t.conn.Close()
		c, err := net.Dial("tcp", t.conn.RemoteAddr().String())
		if err != nil {
			fatal(fmt.Errorf("%s: %w", t.name, err))
		}
		t.conn, t.br = c, bufio.NewReader(c)
	}
	return took
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "seq:", err)
	os.Exit(1)
}
