package testenv

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"time"
)

// bodyGuard stands in front of kinesalite, which exits when a client goes
// away in the middle of a request body (as a killed bridge leaves it): the
// guard reads each request whole before forwarding it, and drops the ones
// whose client vanished. Responses are relayed as they are.
type bodyGuard struct {
	srv      *http.Server
	ln       net.Listener
	upstream string
	client   *http.Client
}

func startBodyGuard(upstream string) (*bodyGuard, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := &bodyGuard{ln: ln, upstream: upstream, client: &http.Client{Timeout: 5 * time.Minute}}
	g.srv = &http.Server{Handler: g, ReadHeaderTimeout: 30 * time.Second}
	go g.srv.Serve(ln)
	return g, nil
}

func (g *bodyGuard) url() string { return "http://" + g.ln.Addr().String() }

func (g *bodyGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the client is gone; kinesalite never sees the half request
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, g.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	req.Host = r.Host
	resp, err := g.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func (g *bodyGuard) close() { _ = g.srv.Close() }
