package chaos

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a loopback TCP proxy that breaks connections on demand: Cut
// resets every open connection (SO_LINGER 0, then close: the peers see a
// TCP RST mid-stream); Down makes the target unreachable: new connections
// are accepted and then held without an answer (a blackhole: requests
// time out) until the outage ends, when they are reset; SetFrozen is a
// silent outage: open connections stay open but carry nothing more, either
// way, as when a network drops packets without a word; and
// SetMidBodyResets cuts answers off in their middle.
type Proxy struct {
	Addr   string // 127.0.0.1:port
	target string
	l      net.Listener

	mu     sync.Mutex
	down   bool
	frozen bool
	thawed *sync.Cond // broadcast when frozen ends or the proxy closes
	conns  map[net.Conn]struct{}
	held   []net.Conn
	closed bool
	wg     sync.WaitGroup

	cuts atomic.Int64

	// Mid-body resets: the chance, per chunk copied from the target to
	// the client, that the proxy forwards only half of it and resets both
	// connections.
	resetMu   sync.Mutex
	resetRate float64
	rng       *rand.Rand
	midResets atomic.Int64
}

// NewProxy starts a proxy to target (host:port, or a URL whose host:port
// is taken).
func NewProxy(target string) (*Proxy, error) {
	if i := strings.Index(target, "://"); i >= 0 {
		target = target[i+3:]
	}
	target = strings.TrimRight(target, "/")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, l: l, conns: map[net.Conn]struct{}{}}
	p.thawed = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// URL is http://Addr.
func (p *Proxy) URL() string { return "http://" + p.Addr }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			reset(c)
			return
		case p.down || p.frozen:
			p.held = append(p.held, c)
			p.mu.Unlock()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		go p.pipe(c)
	}
}

func (p *Proxy) pipe(c net.Conn) {
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if p.down || p.closed {
		p.mu.Unlock()
		reset(up)
		p.drop(c)
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.copyOut(up, c); done <- struct{}{} }()
	go func() { p.copyBack(c, up); done <- struct{}{} }()
	<-done
	p.drop(c)
	p.drop(up)
}

// copyOut copies the client's requests to the target.
func (p *Proxy) copyOut(up, c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.waitThawed()
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			p.waitThawed() // a frozen network carries no FIN either
			return
		}
	}
}

// copyBack copies the target's answers to the client, cutting some of
// them off in the middle with a reset.
func (p *Proxy) copyBack(c, up net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			p.waitThawed()
			if p.resetNow() {
				_, _ = c.Write(buf[:n/2])
				p.midResets.Add(1)
				reset(c)
				reset(up)
				return
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			p.waitThawed()
			return
		}
	}
}

// waitThawed holds what crosses a connection while the proxy is frozen.
func (p *Proxy) waitThawed() {
	p.mu.Lock()
	for p.frozen && !p.closed {
		p.thawed.Wait()
	}
	p.mu.Unlock()
}

func (p *Proxy) resetNow() bool {
	p.resetMu.Lock()
	defer p.resetMu.Unlock()
	return p.resetRate > 0 && p.rng.Float64() < p.resetRate
}

// SetMidBodyResets sets the chance that an answer is cut off in its
// middle by a TCP reset; rng decides.
func (p *Proxy) SetMidBodyResets(rate float64, rng *rand.Rand) {
	p.resetMu.Lock()
	p.resetRate, p.rng = rate, rng
	p.resetMu.Unlock()
}

// MidBodyResets returns how many answers were cut off.
func (p *Proxy) MidBodyResets() int64 { return p.midResets.Load() }

func (p *Proxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// reset closes c with a TCP RST.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Cut resets every open connection; new ones are proxied as before.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		reset(c)
		delete(p.conns, c)
		n++
	}
	p.cuts.Add(1)
	return n
}

// SetTarget sends new connections to target (host:port) and resets the
// open ones, as a DNS name or a cloud endpoint moved to another server
// behaves for its clients.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
	for c := range p.conns {
		reset(c)
		delete(p.conns, c)
	}
}

// SetDown starts (true) or ends (false) an outage. Starting one resets
// every open connection.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down == down {
		return
	}
	p.down = down
	if down {
		for c := range p.conns {
			reset(c)
			delete(p.conns, c)
		}
		return
	}
	for _, c := range p.held {
		reset(c)
	}
	p.held = nil
}

// SetFrozen starts (true) or ends (false) a silent outage. Open
// connections are neither reset nor served: what is sent on them waits in
// the proxy, as if lost, while the peers hear nothing. New connections are
// held unanswered. When it ends, the held connections are reset and the
// open ones carry on, late, unless a peer gave up on them meanwhile.
func (p *Proxy) SetFrozen(frozen bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = frozen
	if frozen {
		return
	}
	for _, c := range p.held {
		reset(c)
	}
	p.held = nil
	p.thawed.Broadcast()
}

// Close stops the proxy and resets its connections.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.thawed.Broadcast()
	for c := range p.conns {
		reset(c)
	}
	for _, c := range p.held {
		reset(c)
	}
	p.held = nil
	p.mu.Unlock()
	err := p.l.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("proxy %s -> %s", p.Addr, p.target)
}
