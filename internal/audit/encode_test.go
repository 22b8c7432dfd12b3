package audit

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAppendRecord_SameBytesAsEncodingJSON: the fast encoder writes the
// very bytes encoding/json writes, for hostile strings and every field.
func TestAppendRecord_SameBytesAsEncodingJSON(t *testing.T) {
	odd := []string{"", "plain", `quote" back\ slash`, "tab\tnl\ncr\r", "\x00\x01\x1f\x7f", "<script>&</script>",
		"caf\u00e9 \u2028 \u2029 \U0001F600", "bad \xff\xfe utf8", strings.Repeat("x", 300)}
	rng := rand.New(rand.NewSource(1))
	pick := func() string { return odd[rng.Intn(len(odd))] }
	for i := 0; i < 2000; i++ {
		r := &Record{Seq: uint64(rng.Int63()), Prev: pick(), Type: TypeCall, Time: Time(time.Unix(rng.Int63n(1<<33), rng.Int63n(1e9))),
			RequestID: pick(), Caller: pick(), CallerAuth: pick(), Subject: pick(), RemoteAddr: pick(), Method: pick(), Upstream: pick(),
			Path: pick(), Query: pick(), Status: rng.Intn(600), Outcome: pick(), Policy: pick(),
			BytesIn: rng.Int63(), BytesOut: rng.Int63(), DurationMS: rng.Float64() * 1e4, UpstreamMS: float64(rng.Intn(3)) * 1e-7,
			RateLimitWaitMS: rng.ExpFloat64() * 1e22, RateLimitedBy: pick(), Retried: rng.Intn(2) == 0, Error: pick()}
		if rng.Intn(2) == 0 {
			r.Credential = &CredentialRef{Source: pick(), Ref: pick(), Version: rng.Intn(100)}
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendRecord(nil, r); !bytes.Equal(got, want) {
			t.Fatalf("record %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// TestWriter_GroupCommitKeepsTheChain: 64 goroutines writing at once; the
// trail has every record once, in one unbroken chain, in fewer writes.
func TestWriter_GroupCommitKeepsTheChain(t *testing.T) {
	var out countingWriter
	w := NewWriter(&out)
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if err := w.Write(&Record{Type: TypeCall, Method: "GET", Path: "/v1/agents"}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	n, err := Verify(bytes.NewReader(out.buf.Bytes()))
	if err != nil || n != 64*200 {
		t.Fatalf("verify: %d records, %v", n, err)
	}
	if written, _ := w.Stats(); written != 64*200 {
		t.Errorf("stats: %d written", written)
	}
	t.Logf("%d records in %d writes", n, out.writes)
	if out.writes >= n {
		t.Errorf("%d writes for %d records: no group commit", out.writes, n)
	}
}

type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	time.Sleep(50 * time.Microsecond) // a write(2) takes a while
	return c.buf.Write(p)
}

func BenchmarkAppendRecord(b *testing.B) {
	r := &Record{Seq: 42, Prev: strings.Repeat("a", 64), Type: TypeCall, Time: Time(time.Now()), RequestID: "0123456789abcdef0123456789abcdef",
		Caller: "soar-workflows", CallerAuth: "key", RemoteAddr: "10.1.2.3:51234", Method: "GET", Upstream: "huntress", Path: "/v1/agents",
		Query: "limit=10", Status: 200, Outcome: OutcomeForwarded, Policy: PolicyAllowed, BytesOut: 5120, DurationMS: 84.2, UpstreamMS: 80.1,
		Credential: &CredentialRef{Source: "vault", Ref: "secret/vendors/huntress", Version: 7}}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for i := 0; i < b.N; i++ {
			buf = appendRecord(buf[:0], r)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_, _ = json.Marshal(r)
		}
	})
}

// BenchmarkWriter64 is the audit writer under 64 concurrent writers, to a
// real file; "signed" also signs a checkpoint every millisecond meanwhile
// (production signs once a minute), to show signing costs a call nothing.
func BenchmarkWriter64(b *testing.B) {
	for _, signed := range []bool{false, true} {
		name := "unsigned"
		if signed {
			name = "signed"
		}
		b.Run(name, func(b *testing.B) {
			w, err := Open(b.TempDir() + "/audit.log")
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			if signed {
				seed, _, _ := NewSigningKey()
				s, _ := NewSigner(seed)
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					t := time.NewTicker(time.Millisecond)
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							_, _, _, _ = w.WriteCheckpoint(s, time.Now())
						}
					}
				}()
			}
			r := Record{Type: TypeCall, Caller: "soar-workflows", Method: "GET", Upstream: "huntress", Path: "/v1/agents", Status: 200, Outcome: OutcomeForwarded}
			b.ReportAllocs()
			b.SetParallelism(32) // 2 cores × 32 = 64 writers
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					rec := r
					if err := w.Write(&rec); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
