package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const plantedValue = "PLANTED-secret-value-4242"

// fakeSource is a Source whose answers a test controls.
type fakeSource struct {
	mu      sync.Mutex
	fields  map[string]Secret
	version int
	err     error
	delay   time.Duration
	reads   atomic.Int64
}

func (f *fakeSource) Kind() string { return "fake" }
func (f *fakeSource) Ref() string  { return "fake/path" }
func (f *fakeSource) Read(ctx context.Context) (Reading, error) {
	f.reads.Add(1)
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return Reading{Fields: f.fields, Version: f.version}, f.err
}
func (f *fakeSource) set(fields map[string]Secret, version int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fields, f.version, f.err = fields, version, err
}

func newTestCache(t *testing.T, src Source, opts Options) *Cache {
	t.Helper()
	c, err := NewCache([]Spec{{Name: "huntress", Source: src, Required: []string{"api_key", "api_secret"}}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var good = map[string]Secret{"api_key": "k1", "api_secret": plantedValue}

func TestCache_ConcurrentMissesShareOneRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{fields: good, version: 3, delay: 50 * time.Millisecond}
		c := newTestCache(t, src, Options{})
		var wg sync.WaitGroup
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cred, err := c.Get(context.Background(), "huntress")
				if err != nil || cred.Version != 3 {
					t.Errorf("get: %v, version %d", err, cred.Version)
				}
			}()
		}
		wg.Wait()
		if n := src.reads.Load(); n != 1 {
			t.Errorf("%d source reads for 50 concurrent misses, want 1", n)
		}
		// Once loaded, Get never touches the source.
		for range 100 {
			_, _ = c.Get(context.Background(), "huntress")
		}
		if n := src.reads.Load(); n != 1 {
			t.Errorf("%d source reads after cached gets, want 1", n)
		}
	})
}

func TestCache_ServesLastGoodCopyUntilMaxStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{fields: good, version: 1}
		var events []Event
		var mu sync.Mutex
		c := newTestCache(t, src, Options{MaxStale: time.Hour, OnEvent: func(e Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}})
		ctx := context.Background()
		if _, err := c.Get(ctx, "huntress"); err != nil {
			t.Fatal(err)
		}
		src.set(nil, 0, errors.New("vault sealed"))
		e := c.entries["huntress"]

		time.Sleep(30 * time.Minute)
		if _, err := c.load(ctx, e); err == nil {
			t.Fatal("load should fail while the source fails")
		}
		cred, err := c.Get(ctx, "huntress")
		if err != nil || cred.Version != 1 {
			t.Fatalf("within max_stale: %v (version %d), want the last good copy", err, cred.Version)
		}
		if ok, st := c.Ready(); !ok || !st[0].Stale || st[0].LastErr == "" {
			t.Errorf("ready %v status %+v: want ready, stale, with the error", ok, st[0])
		}

		time.Sleep(31 * time.Minute)
		if _, err := c.Get(ctx, "huntress"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("past max_stale: %v, want ErrUnavailable", err)
		}
		if ok, _ := c.Ready(); ok {
			t.Error("ready past max_stale")
		}

		src.set(good, 2, nil)
		if _, err := c.load(ctx, e); err != nil {
			t.Fatal(err)
		}
		if cred, err := c.Get(ctx, "huntress"); err != nil || cred.Version != 2 {
			t.Errorf("after recovery: %v version %d", err, cred.Version)
		}
		var names []string
		for _, ev := range events {
			names = append(names, ev.Type)
		}
		want := "loaded,refresh_failed,serving_stale,recovered,rotated"
		if got := strings.Join(names, ","); !sameSet(got, want) {
			t.Errorf("events %s, want %s", got, want)
		}
	})
}

func sameSet(a, b string) bool {
	as, bs := strings.Split(a, ","), strings.Split(b, ",")
	if len(as) != len(bs) {
		return false
	}
	m := map[string]int{}
	for _, x := range as {
		m[x]++
	}
	for _, x := range bs {
		m[x]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestCache_BadSecretsNameTheFieldNeverTheValue(t *testing.T) {
	cases := []struct {
		name   string
		fields map[string]Secret
		want   string
	}{
		{"missing field", map[string]Secret{"api_key": plantedValue}, `field "api_secret" missing`},
		{"empty field", map[string]Secret{"api_key": plantedValue, "api_secret": ""}, `field "api_secret" is empty`},
		{"padded field", map[string]Secret{"api_key": plantedValue, "api_secret": plantedValue + "\n"}, `field "api_secret" has leading or trailing white space`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.DebugLevel)
			c := newTestCache(t, &fakeSource{fields: tc.fields}, Options{Log: zap.New(core)})
			_, err := c.Get(context.Background(), "huntress")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "fake/path") {
				t.Fatalf("error %v, want it to name %s and the path", err, tc.want)
			}
			all := err.Error()
			for _, e := range logs.All() {
				all += fmt.Sprint(e.Message, e.ContextMap())
			}
			if strings.Contains(all, plantedValue) {
				t.Error("the secret value leaked into an error or log")
			}
		})
	}
}

func TestCache_RereadIsRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{fields: good, version: 1}
		c := newTestCache(t, src, Options{MinReread: 5 * time.Second})
		ctx := context.Background()
		_, _ = c.Get(ctx, "huntress")
		// The first 401 re-reads at once, even right after a background read.
		src.set(good, 2, nil)
		if cred, _ := c.Reread(ctx, "huntress"); cred.Version != 2 || src.reads.Load() != 2 {
			t.Fatalf("first reread: version %d, reads %d", cred.Version, src.reads.Load())
		}
		// Another within MinReread does not touch the source.
		src.set(good, 3, nil)
		time.Sleep(time.Second)
		if cred, _ := c.Reread(ctx, "huntress"); cred.Version != 2 || src.reads.Load() != 2 {
			t.Errorf("reread within MinReread read the source (version %d, reads %d)", cred.Version, src.reads.Load())
		}
		time.Sleep(5 * time.Second)
		if cred, _ := c.Reread(ctx, "huntress"); cred.Version != 3 {
			t.Errorf("reread after MinReread: version %d, want 3", cred.Version)
		}
	})
}

func TestCache_RunLoadsRefreshesAndStops(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "h.json")
	writeJSON(t, path, map[string]string{"api_key": "a", "api_secret": "b"})
	c := newTestCache(t, NewFileSource(path), Options{RefreshInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	waitFor(t, func() bool { ok, _ := c.Ready(); return ok })

	// A file rewritten in place is picked up within the poll interval and
	// gets the next version.
	writeJSON(t, path, map[string]string{"api_key": "a2", "api_secret": "b2"})
	waitFor(t, func() bool {
		cred, err := c.Get(ctx, "huntress")
		return err == nil && cred.Version == 2 && cred.Fields["api_key"] == "a2"
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
}

func TestFileSource_ErrorsDoNotQuoteTheFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"bad.json": `{"api_key": ` + plantedValue,
		"bad.yaml": "api_key: [" + plantedValue,
		"num.json": `{"api_key": 12}`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := NewFileSource(path).Read(context.Background())
		if err == nil || strings.Contains(err.Error(), plantedValue) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, err := NewFileSource(filepath.Join(dir, "none.json")).Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestEnvSource(t *testing.T) {
	env := map[string]string{"ONE": plantedValue, "OBJ": `{"api_key":"k","api_secret":"s"}`}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	r, err := NewEnvSource(lookup, "ONE", nil, "token").Read(context.Background())
	if err != nil || r.Fields["token"] != plantedValue {
		t.Errorf("single: %v", err)
	}
	r, err = NewEnvSource(lookup, "OBJ", nil, "").Read(context.Background())
	if err != nil || r.Fields["api_secret"] != "s" {
		t.Errorf("object: %v", err)
	}
	s := NewEnvSource(lookup, "", map[string]string{"api_key": "ONE", "api_secret": "NOPE"}, "")
	if _, err := s.Read(context.Background()); err == nil || !strings.Contains(err.Error(), "NOPE: not set") {
		t.Errorf("fields: %v", err)
	}
	if _, err := NewEnvSource(lookup, "ONE", nil, "").Read(context.Background()); err == nil || strings.Contains(err.Error(), plantedValue) {
		t.Errorf("one value for a two-field auth: %v", err)
	}
}

func TestSecret_PrintsRedactedInEveryFormat(t *testing.T) {
	s := Secret(plantedValue)
	cred := Credential{Fields: map[string]Secret{"k": s}}
	outs := []string{
		fmt.Sprint(s), fmt.Sprintf("%s %v %q %x %X %#v %+v %d", s, s, s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", cred, cred, cred),
	}
	j, _ := json.Marshal(cred)
	outs = append(outs, string(j))
	core, logs := observer.New(zap.DebugLevel)
	zap.New(core).Info("x", zap.Any("cred", cred), zap.Stringer("s", s), zap.Any("s2", s))
	for _, e := range logs.All() {
		outs = append(outs, fmt.Sprint(e.ContextMap()))
	}
	for _, o := range outs {
		if strings.Contains(o, plantedValue) || strings.Contains(o, fmt.Sprintf("%x", plantedValue)) {
			t.Errorf("secret printed: %s", o)
		}
	}
	if s.Reveal() != plantedValue {
		t.Error("Reveal must return the value")
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
