package main

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards loopback TCP connections to a server, with a switch
// that cuts the network the way a partition does: while frozen, bytes in
// both directions are dropped (connections stay open, nothing arrives);
// thawing resets the connections that lost bytes, and new ones flow.
type tcpProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	conns  map[*proxyConn]struct{}
	closed bool
	lastUp time.Time // when the clients last sent bytes that went through
}

type proxyConn struct {
	client, server net.Conn
	lost           bool // bytes were dropped: the streams are broken
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's http:// address.
func (p *tcpProxy) URL() string { return "http://" + p.Addr() }

func (p *tcpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxyConn{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.mu.Unlock()
		go p.pipe(pc, c, s, true)
		go p.pipe(pc, s, c, false)
	}
}

func (p *tcpProxy) pipe(pc *proxyConn, from, to net.Conn, up bool) {
	buf := make([]byte, 32<<10)
	defer func() {
		from.Close()
		// A partition hides a close from the other side too: it stays
		// open until the thaw resets it.
		p.mu.Lock()
		hidden := p.frozen || pc.lost
		if !hidden {
			delete(p.conns, pc)
		}
		p.mu.Unlock()
		if !hidden {
			to.Close()
		}
	}()
	for {
		n, err := from.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop := p.frozen
			if drop {
				pc.lost = true
			} else if up {
				p.lastUp = time.Now()
			}
			p.mu.Unlock()
			if !drop {
				if _, werr := to.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			p.mu.Lock()
			hidden := p.frozen || pc.lost
			p.mu.Unlock()
			if err == io.EOF && !hidden {
				if tc, ok := to.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

// LastUpload returns when a client's bytes last went through to the server.
func (p *tcpProxy) LastUpload() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastUp
}

// Freeze drops every byte from now on, in both directions.
func (p *tcpProxy) Freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// Thaw lets bytes through again and resets the connections that lost
// some (a real partition leaves them broken too).
func (p *tcpProxy) Thaw() {
	p.mu.Lock()
	p.frozen = false
	var broken []*proxyConn
	for pc := range p.conns {
		if pc.lost {
			broken = append(broken, pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range broken {
		pc.client.Close()
		pc.server.Close()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}
}

// Reset closes every connection at once (a peer that vanished with RST).
func (p *tcpProxy) Reset() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	for _, pc := range conns {
		if tc, ok := pc.client.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		pc.client.Close()
		pc.server.Close()
	}
}

func (p *tcpProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Reset()
}
