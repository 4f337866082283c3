package kinesisfake

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Outage is a TCP proxy in front of a server that can make the server
// unreachable and reachable again while clients run. Unreachable, it
// drops every proxied connection and stops accepting: its accept queue is
// full, so the kernel ignores new SYNs and a dial hangs until the client's
// connect timeout, as with a host that vanished from the network.
type Outage struct {
	// URL is http://127.0.0.1:port.
	URL    string
	target string
	l      net.Listener

	mu       sync.Mutex
	down     bool
	resume   chan struct{} // closed when the outage ends
	parked   chan struct{} // closed by the accept loop once it stopped accepting
	conns    map[net.Conn]struct{}
	fillers  []net.Conn
	held     []net.Conn
	closed   bool
	acceptWG sync.WaitGroup
}

// NewOutage starts a proxy to target (host:port or an http:// URL).
func NewOutage(target string) (*Outage, error) {
	if len(target) > 7 && target[:7] == "http://" {
		target = target[7:]
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	// Backlog 0: one pending connection fills the queue.
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "outage")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	o := &Outage{URL: "http://" + l.Addr().String(), target: target, l: l, conns: map[net.Conn]struct{}{}}
	o.acceptWG.Add(1)
	go o.accept()
	return o, nil
}

func (o *Outage) accept() {
	defer o.acceptWG.Done()
	tl := o.l.(*net.TCPListener)
	for {
		o.mu.Lock()
		if o.down && !o.closed {
			parked, resume := o.parked, o.resume
			o.mu.Unlock()
			close(parked)
			<-resume
			continue
		}
		closed := o.closed
		o.mu.Unlock()
		if closed {
			return
		}
		// A short deadline brings the loop back to see an outage begin.
		_ = tl.SetDeadline(time.Now().Add(20 * time.Millisecond))
		c, err := tl.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		o.mu.Lock()
		if o.down {
			// Accepted just as the outage began: hold it unanswered.
			o.held = append(o.held, c)
			o.mu.Unlock()
			continue
		}
		o.conns[c] = struct{}{}
		o.mu.Unlock()
		go o.pipe(c)
	}
}

func (o *Outage) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", o.target, 5*time.Second)
	if err != nil {
		o.drop(c)
		return
	}
	o.mu.Lock()
	if o.down || o.closed {
		o.mu.Unlock()
		up.Close()
		o.drop(c)
		return
	}
	o.conns[up] = struct{}{}
	o.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	o.drop(c)
	o.drop(up)
}

func (o *Outage) drop(c net.Conn) {
	o.mu.Lock()
	delete(o.conns, c)
	o.mu.Unlock()
	c.Close()
}

// SetDown starts (true) or ends (false) the outage.
func (o *Outage) SetDown(down bool) error {
	o.mu.Lock()
	if down == o.down || o.closed {
		o.mu.Unlock()
		return nil
	}
	o.down = down
	if down {
		o.resume = make(chan struct{})
		o.parked = make(chan struct{})
		parked := o.parked
		for c := range o.conns {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			delete(o.conns, c)
		}
		o.mu.Unlock()
		<-parked // the accept loop no longer accepts
		// One pending connection fills the queue (backlog 0).
		addr := o.l.Addr().String()
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("kinesisfake: filling the accept queue: %w", err)
		}
		o.mu.Lock()
		o.fillers = append(o.fillers, c)
		o.mu.Unlock()
		if probe, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			probe.Close()
			return fmt.Errorf("kinesisfake: the accept queue did not fill")
		}
		return nil
	}
	fillers, held := o.fillers, o.held
	o.fillers, o.held = nil, nil
	close(o.resume)
	o.mu.Unlock()
	for _, c := range append(fillers, held...) {
		c.Close()
	}
	return nil
}

// Close stops the proxy.
func (o *Outage) Close() error {
	o.mu.Lock()
	o.closed = true
	if o.down {
		close(o.resume)
		o.down = false
	}
	for c := range o.conns {
		c.Close()
	}
	for _, c := range append(o.fillers, o.held...) {
		c.Close()
	}
	o.mu.Unlock()
	err := o.l.Close()
	o.acceptWG.Wait()
	return err
}
