package proxy_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	metrics2 "runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/assemble"
	"github.com/keybroker/keybroker/internal/audit"
	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/config"
	"github.com/keybroker/keybroker/internal/metrics"
	"github.com/keybroker/keybroker/internal/oauth"
	"github.com/keybroker/keybroker/internal/operations"
	"github.com/keybroker/keybroker/internal/proxy"
	"github.com/keybroker/keybroker/internal/secrets"
	"github.com/keybroker/keybroker/internal/vendortest"
)

// BenchmarkProxy compares, in one run on loopback against a stand-in
// vendor, a bare httputil.ReverseProxy that only sets the Authorization
// header (the Go floor) with keybroker with every feature on: caller key,
// policy, a limiter with room, audit to a file, metrics. The conns
// sub-benchmarks set how many client connections run in parallel.
func BenchmarkProxy(b *testing.B) { benchmarkProxy(b, false) }

// BenchmarkProxy_HTTPS is the same over HTTPS to the vendor (HTTP/2, as
// with a real vendor), both proxies trusting the vendor's test CA. The
// HTTP/1.1 pool is not used here: https vendors take Go's transport.
func BenchmarkProxy_HTTPS(b *testing.B) { benchmarkProxy(b, true) }

func benchmarkProxy(b *testing.B, https bool) {
	body := []byte(`{"agents":[{"id":1,"hostname":"host-1"}],"pagination":{}}`)
	vendor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	dir := b.TempDir()
	bareTransport := &http.Transport{MaxIdleConnsPerHost: 128}
	egressYAML := ""
	if https {
		ca, err := vendortest.NewCA("bench vendor CA")
		if err != nil {
			b.Fatal(err)
		}
		leaf, err := ca.Leaf([]string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		vendor.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}}
		vendor.EnableHTTP2 = true
		vendor.StartTLS()
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca.PEM)
		bareTransport.TLSClientConfig = &tls.Config{RootCAs: pool}
		bareTransport.ForceAttemptHTTP2 = true
		_ = ca.WriteFile(filepath.Join(dir, "ca.pem"))
		egressYAML = fmt.Sprintf("egress: {ca_file: %q}\n", filepath.Join(dir, "ca.pem"))
	} else {
		vendor.Start()
	}
	defer vendor.Close()
	vendorURL := vendor.URL
	if https {
		vendorURL = fmt.Sprintf("https://localhost:%d", vendor.Listener.Addr().(*net.TCPAddr).Port)
	}
	target, _ := url.Parse(vendorURL)

	bare := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Authorization", "Basic aGs6aHM=")
		},
		Transport: bareTransport,
	})
	defer bare.Close()

	kb, key := benchKeybroker(b, vendorURL, egressYAML)
	defer kb.Close()

	for _, conns := range []int{1, 64} {
		for _, s := range []struct {
			name, url string
			hdr       string
		}{{"bare", bare.URL + "/v1/agents", ""}, {"keybroker", kb.URL + "/huntress/v1/agents", "Bearer " + key}} {
			b.Run(fmt.Sprintf("%s/conns=%d", s.name, conns), func(b *testing.B) {
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
				b.ReportAllocs()
				b.SetParallelism(max(1, conns/2)) // GOMAXPROCS 2 on the reference machine
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := benchGet(client, s.url, s.hdr); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// benchKeybroker is keybroker with every feature on (caller key, policy,
// a limiter with room, audit to a file, metrics) in front of vendorURL,
// and the caller's key; extraYAML is added to its configuration.
func benchKeybroker(b *testing.B, vendorURL, extraYAML string) (*httptest.Server, string) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "h.json"), []byte(`{"api_key":"hk","api_secret":"hs"}`), 0o600); err != nil {
		b.Fatal(err)
	}
	key := "kbk_bench_key"
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
upstreams:
  - name: huntress
    preset: huntress
    url: %s
    rate_limit: {requests: 1000000000, per: 1s, burst: 1000000}
    credential: {file: {path: %q}}
callers:
  - name: soar
    key_sha256: %s
    allow: [{upstream: huntress, methods: [GET], paths: [/v1/agents/**]}]
`, vendorURL, filepath.Join(dir, "h.json"), callers.HashKey(key))+extraYAML), nil)
	if err != nil {
		b.Fatal(err)
	}
	parts, err := assemble.Assemble(cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	cache, _ := secrets.NewCache(parts.Specs, parts.Cache)
	creds := oauth.NewCredentials(oauth.CredentialsOptions{Source: cache})
	aud, err := audit.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { aud.Close() })
	p, err := proxy.New(parts.Routes,
		proxy.Options{Credentials: creds, Auditor: aud, Hooks: benchHooks(metrics.New(parts.Upstreams, parts.Callers, metrics.State{}))})
	if err != nil {
		b.Fatal(err)
	}
	return httptest.NewServer(p), key
}

// BenchmarkProxy_Stream512MiB streams a 512 MiB vendor reply through
// keybroker and reports the peak heap growth while it flows (DESIGN: under
// 16 MiB) and the throughput.
func BenchmarkProxy_Stream512MiB(b *testing.B) {
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	streamBench(b, func(w io.Writer, vendorURL string) {
		for i := 0; i < streamSize/len(chunk); i++ {
			_, _ = w.Write(chunk)
		}
	}, func(n int64, tail []byte) bool { return n == streamSize })
}

// BenchmarkProxy_StreamJSON512MiB streams a 512 MiB JSON reply whose link
// field comes last: every byte is tokenized, the link is rewritten, and
// the heap must stay small.
func BenchmarkProxy_StreamJSON512MiB(b *testing.B) {
	item := []byte(`{"id":12345,"hostname":"` + strings.Repeat("h", 100) + `","os":"Windows"},`)
	streamBench(b, func(w io.Writer, vendorURL string) {
		_, _ = io.WriteString(w, `{"agents":[`)
		for n := 0; n < streamSize-len(item); n += len(item) {
			_, _ = w.Write(item)
		}
		_, _ = io.WriteString(w, `{"id":0}],"pagination":{"next_page_url":"`+vendorURL+`/v1/agents?page_token=Mg"}}`)
	}, func(n int64, tail []byte) bool {
		return n > streamSize-1000 && bytes.HasSuffix(tail, []byte(`"next_page_url":"http://kb.bench/v/v1/agents?page_token=Mg"}}`))
	})
}

const streamSize = 512 << 20

// streamBench sends each reply write writes through keybroker (the
// Huntress preset: its replies are read for links) and reports the peak
// heap growth while it flows and the throughput; ok checks the length and
// the last bytes the caller got.
func streamBench(b *testing.B, write func(w io.Writer, vendorURL string), ok func(n int64, tail []byte) bool) {
	var vendorURL string
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		write(w, vendorURL)
	}))
	defer vendor.Close()
	vendorURL = vendor.URL
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "h.json"), []byte(`{"api_key":"hk","api_secret":"hs"}`), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf("upstreams: [{name: v, preset: huntress, url: %q, credential: {file: {path: %q}}}]\nallow_anonymous: true\n",
		vendor.URL, filepath.Join(dir, "h.json"))), nil)
	if err != nil {
		b.Fatal(err)
	}
	parts, err := assemble.Assemble(cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	cache, _ := secrets.NewCache(parts.Specs, parts.Cache)
	p, _ := proxy.New(parts.Routes, proxy.Options{Credentials: oauth.NewCredentials(oauth.CredentialsOptions{Source: cache}),
		Auditor: audit.NewWriter(io.Discard)})
	kb := httptest.NewServer(p)
	defer kb.Close()

	b.SetBytes(streamSize)
	b.ReportAllocs()
	peak := 0.0
	for i := 0; i < b.N; i++ {
		runtime.GC()
		base := heapBytes()
		stop := make(chan struct{})
		done := make(chan float64)
		go func() {
			top := 0.0
			for {
				select {
				case <-stop:
					done <- top
					return
				case <-time.After(5 * time.Millisecond):
					top = max(top, heapBytes()-base)
				}
			}
		}()
		req, _ := http.NewRequest("GET", kb.URL+"/v/v1/agents", nil)
		req.Host = "kb.bench"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		tail := &tailWriter{}
		n, _ := io.Copy(tail, resp.Body)
		resp.Body.Close()
		close(stop)
		peak = max(peak, <-done)
		if !ok(n, tail.b) {
			b.Fatalf("%d bytes, ending %q", n, tail.b)
		}
	}
	b.ReportMetric(peak/(1<<20), "peak-heap-growth-MiB")
}

// tailWriter keeps the last KiB written to it.
type tailWriter struct{ b []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 1024 {
		t.b = append(t.b[:0], t.b[len(t.b)-1024:]...)
	}
	return len(p), nil
}

func heapBytes() float64 {
	s := []metrics2.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics2.Read(s)
	return float64(s[0].Value.Uint64())
}

// benchHooks are the hooks the binary gives the proxy (cmd/proxy's
// proxyHooks), so that the benchmark pays for metrics as production does.
func benchHooks(m *metrics.Metrics) proxy.Hooks {
	return proxy.Hooks{CallStarted: m.CallStarted, CallFinished: m.CallFinished, LinkDropped: m.LinkDropped,
		TLSHandshakeFailed: m.TLSHandshakeFailed, TokenRequested: m.TokenRequested, RefusalUnrecorded: m.RefusalUnrecorded}
}

// BenchmarkDecision is a call's policy decision in the vendor's terms:
// its operation found in the Huntress table (both path forms), then a
// tier rule with paths judged.
func BenchmarkDecision(b *testing.B) {
	cat := operations.Huntress()
	reg, err := callers.NewRegistry([]callers.Caller{{Name: "soar", KeySHA256: make([]byte, 32), Allow: []callers.Rule{
		{Upstream: "huntress", Tiers: []string{"read", "respond"}, Paths: []string{"/v1/**"}},
	}}}, false)
	if err != nil {
		b.Fatal(err)
	}
	id, _ := reg.Named("soar")
	calls := []struct{ method, path string }{
		{"GET", "/v1/agents"},
		{"POST", "/v1/accounts/42/agents/7/isolation"},
		{"GET", "/v1/incident_reports/5/remediations/9"},
		{"POST", "/v1/siem/query"},
		{"DELETE", "/v1/accounts/42/agents/7"}, // refused: admin
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c := calls[i%len(calls)]
		a := callers.Action{Upstream: "huntress", Method: c.method, Path: c.path}
		if op := cat.Match(c.method, c.path); op != nil {
			a.Operation, a.Tier = op.Name, string(op.Tier)
		}
		if d := id.Allow(a); d.Allowed == (c.method == "DELETE") {
			b.Fatalf("%s %s: %+v", c.method, c.path, d)
		}
	}
}

// BenchmarkProxy_InFlight holds 500 calls in flight at once, through the
// bare floor and through keybroker, against a vendor that answers only
// when all have arrived, and reports what each call in flight costs in
// goroutine stacks and in live heap (after a collection). The figures
// include the client's and the vendor's share, the same for both proxies:
// the difference between the two is keybroker's own. This is what
// bench/rss.sh sees per busy connection.
func BenchmarkProxy_InFlight(b *testing.B) {
	const calls = 100
	var arrived sync.WaitGroup
	release := make(chan struct{})
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"agents":[],"pagination":{}}`)
	}))
	defer vendor.Close()
	target, _ := url.Parse(vendor.URL)
	bare := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Authorization", "Basic aGs6aHM=")
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: calls},
	})
	defer bare.Close()
	kb, key := benchKeybroker(b, vendor.URL, "")
	defer kb.Close()
	for _, s := range []struct{ name, url, hdr string }{
		{"bare", bare.URL + "/v1/agents", ""}, {"keybroker", kb.URL + "/huntress/v1/agents", "Bearer " + key},
	} {
		b.Run(s.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: calls}}
			var stack, heap float64
			for i := 0; i < b.N; i++ {
				stack0, heap0 := inFlightMemory()
				release = make(chan struct{})
				arrived.Add(calls)
				var done sync.WaitGroup
				for range calls {
					done.Add(1)
					go func() {
						defer done.Done()
						if err := benchGet(client, s.url, s.hdr); err != nil {
							b.Error(err)
						}
					}()
				}
				arrived.Wait()
				stack1, heap1 := inFlightMemory()
				close(release)
				done.Wait()
				stack += stack1 - stack0
				heap += heap1 - heap0
			}
			b.ReportMetric(stack/float64(b.N)/calls, "stack-B/call")
			b.ReportMetric(heap/float64(b.N)/calls, "heap-B/call")
		})
	}
}

// benchGet sends one GET (with Proxy-Authorization auth, unless empty)
// and reads the whole reply; an error for anything but a 200.
func benchGet(client *http.Client, url, auth string) error {
	req, _ := http.NewRequest("GET", url, nil)
	if auth != "" {
		req.Header.Set("Proxy-Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// inFlightMemory is the goroutine stacks' and the live heap's bytes, after
// a collection.
func inFlightMemory() (stack, heap float64) {
	runtime.GC()
	s := []metrics2.Sample{{Name: "/memory/classes/heap/stacks:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics2.Read(s)
	return float64(s[0].Value.Uint64()), float64(s[1].Value.Uint64())
}
