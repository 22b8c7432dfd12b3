//go:build !linux && !darwin

package proxy

import "net"

// peeker cannot peek here: a connection the vendor closed is found when
// the request is sent, and the request sent once more.
type peeker struct{}

func newPeeker(net.Conn) *peeker { return nil }

func (p *peeker) check() bool { return true }
