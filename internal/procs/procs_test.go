package procs

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// fake is a Governor whose processor changes are counted, not made.
func fake() (*Governor, *atomic.Int32, *atomic.Int32) {
	var lowered, restored atomic.Int32
	g := &Governor{Quiet: DefaultQuiet, Lower: func() { lowered.Add(1) }, Restore: func() { restored.Add(1) }}
	return g, &lowered, &restored
}

func call(t *testing.T, h http.Handler) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status %d, want 204 from the wrapped handler", rec.Code)
	}
}

func noContent(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }

func TestOneAtATimeGoesDownAfterAQuietSpell(t *testing.T) {
	g, lowered, restored := fake()
	h := g.Wrap(http.HandlerFunc(noContent))
	for i := 0; i < ticks-1; i++ {
		call(t, h)
		call(t, h)
		g.Tick()
	}
	if lowered.Load() != 0 || g.OneProcessor() {
		t.Fatalf("lowered before a whole quiet spell (%d ticks)", ticks-1)
	}
	call(t, h)
	g.Tick()
	if lowered.Load() != 1 || !g.OneProcessor() {
		t.Fatalf("after %d quiet ticks: lowered %d times, one processor %v; want once, true", ticks, lowered.Load(), g.OneProcessor())
	}
	// Staying quiet changes nothing more; calls one at a time keep it down.
	for i := 0; i < 3*ticks; i++ {
		call(t, h)
		g.Tick()
	}
	if lowered.Load() != 1 || restored.Load() != 0 {
		t.Errorf("quiet calls: lowered %d, restored %d; want 1 and 0", lowered.Load(), restored.Load())
	}
}

// heldCall wraps g around a handler that holds a call to /hold until
// release, and runs look in any other call. It starts the held call and
// returns once that call is in its handler; release ends it.
func heldCall(g *Governor, look func()) (h http.Handler, release func()) {
	held, free, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	h = g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(held)
			<-free
		} else {
			look()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	go func() {
		defer close(done)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/hold", nil))
	}()
	<-held
	return h, func() { close(free); <-done }
}

func TestASecondCallInFlightRestoresAtOnce(t *testing.T) {
	g, lowered, restored := fake()
	for i := 0; i < ticks; i++ {
		g.Tick()
	}
	if !g.OneProcessor() {
		t.Fatal("an idle governor did not go down to one processor")
	}

	var sawOne atomic.Bool
	h, release := heldCall(g, func() { sawOne.Store(g.OneProcessor()) })
	if !g.OneProcessor() || restored.Load() != 0 {
		t.Fatal("one call in flight brought the processors back")
	}
	call(t, h) // a second call while the first is held
	if sawOne.Load() || g.OneProcessor() || restored.Load() != 1 {
		t.Errorf("second call in flight: it ran on one processor %v, governor one %v, restored %d times; want false, false, 1",
			sawOne.Load(), g.OneProcessor(), restored.Load())
	}
	// It stays up for a whole quiet spell after the overlap: the first
	// look sees the overlap, the next ticks-1 are not yet a spell.
	release()
	for i := 0; i < ticks; i++ {
		g.Tick()
	}
	if g.OneProcessor() || lowered.Load() != 1 {
		t.Fatalf("lowered again within a quiet spell of the overlap (lowered %d times)", lowered.Load())
	}
	g.Tick()
	if !g.OneProcessor() || lowered.Load() != 2 {
		t.Errorf("a whole quiet spell after the overlap: one processor %v, lowered %d times; want true, 2", g.OneProcessor(), lowered.Load())
	}
}

// TestNeverLoweredUnderOverlap races calls against a ticker far faster
// than Run's: the governor never goes down while two calls are in their
// handlers, and once calls stop it is down.
func TestNeverLoweredUnderOverlap(t *testing.T) {
	var handlers, bad, lowered atomic.Int32
	g := &Governor{Quiet: DefaultQuiet, Restore: func() {}}
	g.Lower = func() {
		lowered.Add(1)
		if handlers.Load() > 1 {
			bad.Add(1)
		}
	}
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Add(-1)
		runtime.Gosched()
		w.WriteHeader(http.StatusNoContent)
	}))
	stop, ticked := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ticked)
		for {
			select {
			case <-stop:
				return
			default:
				g.Tick()
				runtime.Gosched()
			}
		}
	}()
	for round := 0; round < 300; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 1+round%4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
			}()
		}
		wg.Wait()
	}
	close(stop)
	<-ticked
	if bad.Load() > 0 {
		t.Errorf("went down to one processor %d times with two calls in their handlers", bad.Load())
	}
	for i := 0; i < ticks+1; i++ {
		g.Tick()
	}
	if !g.OneProcessor() || lowered.Load() == 0 {
		t.Errorf("after the calls stopped: one processor %v, lowered %d times", g.OneProcessor(), lowered.Load())
	}
}

// TestRuntime runs the real governor: GOMAXPROCS goes to 1 and comes back
// to the runtime's default.
func TestRuntime(t *testing.T) {
	g := New()
	if g == nil {
		t.Skip("one processor: nothing to govern")
	}
	want := runtime.GOMAXPROCS(0)
	t.Cleanup(runtime.SetDefaultGOMAXPROCS)
	for i := 0; i < ticks; i++ {
		g.Tick()
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("after a quiet spell GOMAXPROCS is %d, want 1", n)
	}
	var during atomic.Int32
	h, release := heldCall(g, func() { during.Store(int32(runtime.GOMAXPROCS(0))) })
	call(t, h)
	release()
	if int(during.Load()) != want {
		t.Errorf("the overlapping call ran with GOMAXPROCS %d, want the default %d", during.Load(), want)
	}
}
