package chaos

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mangler is an HTTP proxy in front of an AWS JSON endpoint that spoils
// some answers the way broken networks and middleboxes do: a JSON body cut
// short, an HTML page with status 200, an HTML error page from a gateway
// (502), a valid body under the wrong content type. Spoiled answers are
// given after the request reached the endpoint (the gateway page before),
// so a client cannot tell whether its request took effect.
type Mangler struct {
	URL      string
	upstream string
	srv      *httptest.Server
	client   *http.Client

	mu   sync.Mutex
	rng  *rand.Rand
	rate float64
	ops  map[string]bool // operation names (the X-Amz-Target after the dot)

	Spoiled atomic.Int64
}

// NewMangler starts a proxy to upstream that spoils answers of the named
// operations with the given rate.
func NewMangler(upstream string, rng *rand.Rand, rate float64, ops ...string) *Mangler {
	m := &Mangler{upstream: strings.TrimRight(upstream, "/"), rng: rng, rate: rate, ops: map[string]bool{},
		client: &http.Client{Timeout: 60 * time.Second}}
	for _, op := range ops {
		m.ops[op] = true
	}
	m.srv = httptest.NewServer(m)
	m.URL = m.srv.URL
	return m
}

// SetRate changes the share of spoiled answers.
func (m *Mangler) SetRate(rate float64) {
	m.mu.Lock()
	m.rate = rate
	m.mu.Unlock()
}

// Close stops the proxy.
func (m *Mangler) Close() { m.srv.CloseClientConnections(); m.srv.Close() }

const htmlPage = `<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>` +
	`<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response from an upstream server.</p></body></html>`

func (m *Mangler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	target := r.Header.Get("X-Amz-Target")
	op := target[strings.LastIndexByte(target, '.')+1:]
	m.mu.Lock()
	mode := -1
	if m.ops[op] && m.rate > 0 && m.rng.Float64() < m.rate {
		mode = m.rng.IntN(4)
	}
	m.mu.Unlock()
	if mode == 2 { // a gateway's error page; the request never arrives
		m.Spoiled.Add(1)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, htmlPage)
		return
	}
	// The request is finished even when its client has gone, as AWS would.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, m.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return
	}
	for k, v := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Accept-Encoding", "Connection":
			continue
		}
		req.Header[k] = v
	}
	resp, err := m.client.Do(req)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	respBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ctype := resp.Header.Get("Content-Type")
	switch mode {
	case 0: // cut short
		m.Spoiled.Add(1)
		respBody = respBody[:len(respBody)/2]
	case 1: // an HTML page with 200
		m.Spoiled.Add(1)
		ctype, respBody = "text/html; charset=utf-8", []byte("<html><body><h1>Welcome</h1><p>Please log in to continue.</p></body></html>")
		resp.StatusCode = http.StatusOK
	case 3: // the right body, the wrong content type
		m.Spoiled.Add(1)
		ctype = "text/plain"
	}
	for k, v := range resp.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Connection", "Transfer-Encoding", "Content-Type", "X-Amz-Crc32":
			continue
		}
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(respBody)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(respBody)
}
