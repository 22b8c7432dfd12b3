package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestProxy_StreamsBothWays: a vendor reply reaches the caller as it is
// produced (the vendor does not finish until the caller has seen the first
// part), and large bodies pass intact in both directions.
func TestProxy_StreamsBothWays(t *testing.T) {
	seen := make(chan struct{})
	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB
	var gotUpload [32]byte
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/stream":
			_, _ = io.WriteString(w, "part one\n")
			w.(http.Flusher).Flush()
			select {
			case <-seen:
			case <-time.After(5 * time.Second):
				return
			}
			_, _ = io.WriteString(w, "part two\n")
		case "/v1/upload":
			h := sha256.New()
			_, _ = io.Copy(h, r.Body)
			copy(gotUpload[:], h.Sum(nil))
		case "/v1/download":
			_, _ = w.Write(big)
		}
	}))
	defer vendor.Close()
	h := newHarness(t, harnessOpts{huntressURL: vendor.URL, huntressYAML: "    max_request_bytes: 16777216\n"})

	req, _ := http.NewRequest("GET", h.srv.URL+"/huntress/v1/stream", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() { l, _ := rd.ReadString('\n'); first <- l }()
	select {
	case l := <-first:
		if l != "part one\n" {
			t.Fatalf("first part %q", l)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the first part did not arrive before the vendor finished: the reply is buffered")
	}
	close(seen)
	rest, _ := io.ReadAll(rd)
	resp.Body.Close()
	if string(rest) != "part two\n" {
		t.Errorf("rest %q", rest)
	}

	upload := bytes.Repeat([]byte("u"), 5<<20) // over the 64 KiB replay buffer
	resp, _ = h.do("POST", "/huntress/v1/upload", bytes.NewReader(upload), bearer(soarKey))
	if resp.StatusCode != 200 || gotUpload != sha256.Sum256(upload) {
		t.Errorf("upload: status %d, vendor got a different body", resp.StatusCode)
	}
	rec := h.lastRecord(resp.Header.Get("X-Request-Id"))
	if rec["bytes_in"] != float64(len(upload)) {
		t.Errorf("bytes_in %v", rec["bytes_in"])
	}

	req, _ = http.NewRequest("GET", h.srv.URL+"/huntress/v1/download", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+soarKey)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.New()
	n, _ := io.Copy(hash, resp.Body)
	resp.Body.Close()
	if n != int64(len(big)) || !bytes.Equal(hash.Sum(nil), func() []byte { s := sha256.Sum256(big); return s[:] }()) {
		t.Errorf("download: %d bytes, want %d intact", n, len(big))
	}
	if rec := h.lastRecord(resp.Header.Get("X-Request-Id")); rec["bytes_out"] != float64(len(big)) {
		t.Errorf("bytes_out %v", rec["bytes_out"])
	}
}
