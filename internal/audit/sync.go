package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Sync is how the writer puts lines on stable storage (audit.sync). Every
// setting survives a process crash: a line write(2) returned for is in the
// page cache. They differ only for a power loss or a kernel crash.
type Sync int

const (
	// SyncWrites (the default) syncs the begin line of a call whose method
	// is not GET, HEAD or OPTIONS before the call is forwarded, and
	// everything else within a second.
	SyncWrites Sync = iota
	// SyncAll syncs every begin line before its call is forwarded, and
	// everything else within a second.
	SyncAll
	// SyncNone leaves it to the operating system.
	SyncNone
)

// syncNames are audit.sync's values.
var syncNames = []string{SyncWrites: "writes", SyncAll: "all", SyncNone: "none"}

// ParseSync reads an audit.sync value: writes, all or none.
func ParseSync(s string) (Sync, error) {
	for i, n := range syncNames {
		if s == n {
			return Sync(i), nil
		}
	}
	return 0, fmt.Errorf("must be writes, all or none, not %q", s)
}

func (s Sync) String() string { return syncNames[s] }

// syncEvery is the longest a written line waits for a sync, under writes
// and all.
const syncEvery = time.Second

// Options are a file writer's settings (OpenWith).
type Options struct {
	// Sync is when lines are synced. Default SyncWrites.
	Sync Sync
	// Syncer puts the file's written data on stable storage. Default
	// fdatasync(2) (fsync where there is none); tests count calls.
	Syncer func(f *os.File) error
	// Replica names this keybroker among several writing their own
	// trails (audit.replica): an audit_file_opened event naming it heads
	// every new file, so that the files of several replicas can be told
	// apart and put in order. "": none is written.
	Replica string
}

// synced says whether a begin line of a call with this method must be on
// stable storage before the call is forwarded.
func (s Sync) begins(method string) bool {
	switch s {
	case SyncAll:
		return true
	case SyncWrites:
		return method != "GET" && method != "HEAD" && method != "OPTIONS"
	}
	return false
}

// syncTo returns once every line up to seq is on stable storage (group
// commit: one sync covers every line written before it started, and
// at most one runs at a time, with w.mu released so that writes go on).
// A failed sync marks the trail failed, as a failed write does: Check
// refuses calls until a reopen proves it again. w.mu is held.
func (w *Writer) syncTo(seq uint64) error {
	for w.synced < seq {
		switch {
		case w.file == nil || w.unsyncable:
			return nil // stdout, a device, a pipe, a test buffer: nothing to sync
		case w.syncing:
			w.cond.Wait()
		default:
			if err := w.syncOnce(); err != nil {
				return fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
		}
	}
	return nil
}

// syncOnce syncs what is written so far. w.mu is held, and released while
// the file is synced.
func (w *Writer) syncOnce() error {
	w.syncing = true
	f, target := w.file, w.durable
	w.mu.Unlock()
	err := w.syncer(f)
	w.mu.Lock()
	w.syncing = false
	w.cond.Broadcast()
	if err != nil {
		err = fmt.Errorf("sync audit file: %w", err)
		w.failed, w.syncBroken = err, true
		w.writeErrors.Add(1)
		return err
	}
	w.synced = max(w.synced, target)
	return nil
}

// armSync makes sure a line just written is synced within syncEvery
// (w.mu held): a timer, armed while anything is unsynced, no goroutine
// while the trail is idle.
func (w *Writer) armSync() {
	if w.sync == SyncNone || w.file == nil || w.unsyncable || w.syncTimer != nil {
		return
	}
	w.syncTimer = time.AfterFunc(syncEvery, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.syncTimer = nil
		if w.file != nil && w.synced < w.durable && !w.syncing {
			_ = w.syncOnce()
		}
		if w.file != nil && w.synced < w.durable {
			w.armSync()
		}
	})
}

// syncDir syncs the directory of a file just created, so that the file
// itself survives a power loss, not only its data.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
