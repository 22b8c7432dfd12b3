package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// progress shows, on a terminal's stderr, how far audit verify and audit
// report have read a trail that takes more than a second: the file, the
// bytes read of all of them, the speed and the time left. Nothing is shown
// when stderr is not a terminal (a pipe, a file, CI).
type progress struct {
	out   io.Writer
	total int64
	files int
	read  atomic.Int64
	file  atomic.Int32
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

// newProgress starts showing progress over files on out; nil when out is
// not a terminal.
func newProgress(files []string, out *os.File) *progress {
	if _, err := unix.IoctlGetTermios(int(out.Fd()), unix.TCGETS); err != nil {
		return nil
	}
	p := &progress{out: out, files: len(files), start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			p.total += st.Size()
		}
	}
	go p.run()
	return p
}

func (p *progress) run() {
	defer close(p.done)
	shown := false
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			if shown {
				fmt.Fprint(p.out, "\r\033[K")
			}
			return
		case now := <-tick.C:
			if now.Sub(p.start) < time.Second {
				continue
			}
			fmt.Fprint(p.out, "\r\033[K"+p.line(now))
			shown = true
		}
	}
}

// line is the progress in one line.
func (p *progress) line(now time.Time) string {
	read, el := p.read.Load(), now.Sub(p.start).Seconds()
	speed := float64(read) / el
	left := "?"
	if speed > 0 && p.total >= read {
		left = fmt.Sprintf("%.0f s", float64(p.total-read)/speed)
	}
	return fmt.Sprintf("file %d of %d, %d of %d MiB, %.0f MB/s, %s left", p.file.Load(), p.files, read>>20, p.total>>20, speed/1e6, left)
}

// Done stops the display and clears its line.
func (p *progress) Done() {
	if p == nil {
		return
	}
	close(p.stop)
	<-p.done
}

// reader counts what r reads as file n (1-based) of the trail.
func (p *progress) reader(n int, r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	return &countingReader{r: r, p: p, n: int32(n)}
}

type countingReader struct {
	r io.Reader
	p *progress
	n int32
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.read.Add(int64(n))
	c.p.file.Store(c.n)
	return n, err
}
