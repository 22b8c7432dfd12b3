//go:build linux || darwin

package proxy

import (
	"net"
	"syscall"
)

// peeker looks at a pooled connection without reading from it. It is made
// once per connection, so a check allocates nothing.
type peeker struct {
	rc    syscall.RawConn
	alive bool
	buf   [1]byte
	fn    func(fd uintptr) bool
}

func newPeeker(c net.Conn) *peeker {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &peeker{rc: rc}
	p.fn = func(fd uintptr) bool {
		// Nothing to read yet is the only sign of a live, quiet
		// connection: 0 bytes is the vendor's close, any byte is junk.
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		p.alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait
	}
	return p
}

// check says whether the connection is still open and quiet: a peek that
// does not wait finds neither the vendor's close nor bytes nobody asked
// for.
func (p *peeker) check() bool {
	if p == nil {
		return true
	}
	p.alive = false
	return p.rc.Read(p.fn) == nil && p.alive
}
