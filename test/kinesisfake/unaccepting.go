package kinesisfake

import (
	"fmt"
	"net"
	"syscall"
)

// Unaccepting is a loopback TCP listener that never accepts: its accept
// queue is full, so the kernel drops new SYNs and a dial hangs until the
// client's connect timeout. It stands in for an unreachable endpoint.
type Unaccepting struct {
	// URL is http://127.0.0.1:port.
	URL    string
	Addr   string
	fd     int
	filler net.Conn
}

// NewUnaccepting opens the listener (Linux).
func NewUnaccepting() (*Unaccepting, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("bind: %w", err)
	}
	// A backlog of 0 holds one completed connection, which the filler takes.
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("listen: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	filler, err := net.Dial("tcp", addr)
	if err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("filling the accept queue: %w", err)
	}
	return &Unaccepting{URL: "http://" + addr, Addr: addr, fd: fd, filler: filler}, nil
}

// Close releases the listener.
func (u *Unaccepting) Close() error {
	u.filler.Close()
	return syscall.Close(u.fd)
}
