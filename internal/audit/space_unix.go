//go:build linux || darwin || freebsd || openbsd || netbsd

package audit

import "golang.org/x/sys/unix"

func statSpace(dir string) (Space, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Space{}, false
	}
	bs := uint64(st.Bsize) // Bsize is int64 on Linux, uint32 elsewhere
	return Space{Free: uint64(st.Bavail) * bs, Total: uint64(st.Blocks) * bs}, true
}
