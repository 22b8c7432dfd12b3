package audit

import "path/filepath"

// Space is the room left on the audit file's filesystem.
type Space struct {
	Free, Total uint64 // bytes available to keybroker, and the filesystem's size
}

// Space reads the free space on the audit file's filesystem. ok is false
// when the trail is not a file (stdout) or the system cannot tell.
func (w *Writer) Space() (Space, bool) {
	if w.path == "" {
		return Space{}, false
	}
	return statSpace(filepath.Dir(w.path))
}
