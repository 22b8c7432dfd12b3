//go:build linux || darwin

package proxy

import (
	"net"
	"syscall"
)

// connAlive says whether a pooled connection is still open and quiet: a
// peek that does not wait finds neither the vendor's close nor bytes
// nobody asked for.
func connAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		// Nothing to read yet is the only sign of a live, quiet
		// connection: 0 bytes is the vendor's close, any byte is junk.
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait
	})
	return err == nil && alive
}
