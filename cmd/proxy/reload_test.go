package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/vendortest"
)

func TestServe_ReloadUnderLoadDropsNoCall(t *testing.T) {
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk", "hs", vendortest.HuntressOptions{Limit: 1 << 30, Window: time.Second})
	defer hunt.Close()
	for _, f := range []string{"h1.json", "h2.json"} {
		mustWrite(t, filepath.Join(dir, f), `{"api_key":"hk","api_secret":"hs"}`)
	}
	soar, soarSum, _ := callers.NewKey()
	newbie, newbieSum, _ := callers.NewKey()
	auditPath := filepath.Join(dir, "audit.log")
	cfgPath := filepath.Join(dir, "k.yaml")
	write := func(credFile, extraCallers string) {
		doc := fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  - name: huntress
    preset: huntress
    url: %q
    rate_limit: {requests: 1000000, per: 1s, burst: 10000}
    credential: {file: {path: %q}}
callers:
  - {name: soar, key_sha256: %s}
%s
audit: {path: %q}
`, hunt.URL, filepath.Join(dir, credFile), soarSum, extraCallers, auditPath)
		tmp := cfgPath + ".tmp"
		mustWrite(t, tmp, doc)
		os.Rename(tmp, cfgPath)
	}
	write("h1.json", "")
	listen, admin, stop, stderr := startServe(t, cfgPath)
	waitReady(t, "http://"+admin+"/readyz")
	call := func(key string) int {
		req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/account", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := call(newbie); st != 401 {
		t.Fatalf("newbie before the reload: %d", st)
	}

	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	stopAt := time.Now().Add(3 * time.Second)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) {
				if call(soar) == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	waitLog := func(msg string) {
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(stderr.String(), msg) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log", msg)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Reload once the load is under way.
	for ok.Load() < 100 && time.Now().Before(stopAt) {
		time.Sleep(5 * time.Millisecond)
	}
	// A good configuration: a new caller, and the credential in another file.
	write("h2.json", "  - {name: newbie, key_sha256: "+newbieSum+"}")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitLog("configuration reloaded")
	if st := call(newbie); st != 200 {
		t.Errorf("newbie after the reload: %d", st)
	}
	// A bad one: rejected, the running configuration stays.
	mustWrite(t, cfgPath, "upstreams: [{name: huntress, preset: nope}]\ncallers: []\n")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitLog("configuration rejected")
	wg.Wait()
	if st := call(newbie); st != 200 {
		t.Errorf("newbie after a rejected reload: %d", st)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("%d calls failed, %d succeeded across two reloads", failed.Load(), ok.Load())
	}
	if !strings.Contains(stderr.String(), "upstreams[0].preset: unknown preset") {
		t.Error("the rejection does not name the field")
	}
	raw, _ := os.ReadFile(auditPath)
	for _, ev := range []string{`"name":"config_reloaded"`, `"name":"config_rejected"`, `"ref":"` + filepath.Join(dir, "h2.json")} {
		if !strings.Contains(string(raw), ev) {
			t.Errorf("audit lacks %s", ev)
		}
	}
	t.Logf("%d calls across a good and a bad reload, %d failed", ok.Load(), failed.Load())
}

func TestServe_ShutdownLetsInFlightCallsFinish(t *testing.T) {
	dir := t.TempDir()
	hunt := vendortest.NewHuntress("hk", "hs", vendortest.HuntressOptions{Delay: time.Second})
	defer hunt.Close()
	mustWrite(t, filepath.Join(dir, "h.json"), `{"api_key":"hk","api_secret":"hs"}`)
	key, sum, _ := callers.NewKey()
	cfgPath := filepath.Join(dir, "k.yaml")
	auditPath := filepath.Join(dir, "audit.log")
	mustWrite(t, cfgPath, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams: [{name: huntress, preset: huntress, url: %q, credential: {file: {path: %q}}}]
callers: [{name: soar, key_sha256: %s}]
audit: {path: %q}
server: {shutdown_timeout: 10s}
`, hunt.URL, filepath.Join(dir, "h.json"), sum, auditPath))
	listen, admin, stop, _ := startServe(t, cfgPath)
	waitReady(t, "http://"+admin+"/readyz")
	status := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+listen+"/huntress/v1/account", nil)
		req.Header.Set("Proxy-Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	// Wait until keybroker reports the call in flight (it sits at the slow
	// vendor for a second).
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(scrapeRaw(t, admin), "keybroker_inflight_requests 1") {
		if time.Now().After(deadline) {
			t.Fatal("the call never showed as in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(status) > 0 {
		t.Fatal("the call finished before the shutdown began")
	}
	if err := stop(); err != nil { // SIGTERM's path
		t.Fatal(err)
	}
	if st := <-status; st != 200 {
		t.Errorf("in-flight call got %d, want 200", st)
	}
	raw, _ := os.ReadFile(auditPath)
	call := strings.Index(string(raw), `"caller":"soar"`)
	shutdown := strings.Index(string(raw), `"name":"shutdown"`)
	if call < 0 || shutdown < call {
		t.Errorf("the call's record must be written, before the shutdown event:\n%s", raw)
	}
}

func scrapeRaw(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
