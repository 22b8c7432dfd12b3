package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// bigTrail writes n calls of varied lengths (some far longer than a
// read chunk) and returns the trail.
func bigTrail(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i := range n {
		path := "/v1/agents/" + strings.Repeat("x", (i*7919)%900)
		if i%997 == 0 {
			path = "/v1/" + strings.Repeat("long", 200) // records of ~1 KiB and more
		}
		rec := &Record{Type: TypeCall, Time: Time(time.Unix(int64(i), 0)), RequestID: "r", Method: "GET", Path: path, Query: strings.Repeat("q=1&", (i*31)%600), Status: 200}
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestVerify_ParallelReaderAcrossChunks: a trail of many chunks verifies
// whole, whatever its lines' lengths; an edit anywhere, on either side of
// a chunk boundary, is found at its line.
func TestVerify_ParallelReaderAcrossChunks(t *testing.T) {
	const n = 3000
	trail := bigTrail(t, n)
	if len(trail) < 4*chunkSize {
		t.Fatalf("trail of %d bytes: want several chunks", len(trail))
	}
	if got, err := Verify(bytes.NewReader(trail)); err != nil || got != n {
		t.Fatalf("verify: %d, %v", got, err)
	}
	for _, at := range []int{chunkSize - 100, chunkSize, 2*chunkSize + 7, len(trail) - 50} {
		i := bytes.LastIndexByte(trail[:at], '\n') + 1 // the line that holds byte at
		line := bytes.Count(trail[:i], []byte("\n")) + 1
		edited := append([]byte{}, trail...)
		j := i + bytes.Index(trail[i:], []byte(`"status":200`))
		copy(edited[j:], `"status":201`)
		_, err := Verify(bytes.NewReader(edited))
		var ve *VerifyError
		// The edited line itself still reads; the next one's prev breaks.
		if want := line + 1; line == n {
			if err != nil {
				t.Errorf("an edit of the last line is not detectable without a checkpoint: %v", err)
			}
		} else if !errors.As(err, &ve) || ve.Line != want {
			t.Errorf("edit at byte %d (line %d): %v; want a break at line %d", at, line, err, want)
		}
	}
}

// TestVerify_LinesWithoutTheFixedPrefix: a line whose fields are in
// another order is decoded whole and verifies the same; an upper-case
// prev is not the same hash.
func TestVerify_LinesWithoutTheFixedPrefix(t *testing.T) {
	trail := bigTrail(t, 3)
	lines := strings.Split(strings.TrimSpace(string(trail)), "\n")
	// The same JSON object, seq after prev: not the fixed prefix, but the
	// chain does not care for field order (it hashes the bytes).
	re := strings.Replace(lines[0], `{"seq":1,"prev":"",`, `{"prev":"","seq":1,`, 1)
	doc := re + "\n" + rechainFrom(t, re, lines[1:])
	if n, err := Verify(strings.NewReader(doc)); err != nil || n != 3 {
		t.Errorf("reordered first line: %d, %v", n, err)
	}
	upper := lines[0] + "\n" + strings.Replace(lines[1], lines[1][17:81], strings.ToUpper(lines[1][17:81]), 1) + "\n"
	var ve *VerifyError
	if _, err := Verify(strings.NewReader(upper)); !errors.As(err, &ve) || ve.Line != 2 {
		t.Errorf("upper-case prev: %v; want a break at line 2", err)
	}
}

// rechainFrom recomputes prev of each line after first.
func rechainFrom(t *testing.T, first string, rest []string) string {
	t.Helper()
	prev := hashLine([]byte(first))
	var b strings.Builder
	for _, l := range rest {
		i := strings.Index(l, `"prev":"`) + len(`"prev":"`)
		l = l[:i] + prev + l[i+64:]
		b.WriteString(l + "\n")
		prev = hashLine([]byte(l))
	}
	return b.String()
}
