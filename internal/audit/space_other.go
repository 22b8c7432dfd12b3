//go:build !(linux || darwin || freebsd || openbsd || netbsd)

package audit

func statSpace(string) (Space, bool) { return Space{}, false }
