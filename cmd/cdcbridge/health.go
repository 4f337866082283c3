package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// component is what the daemon asks of a source and of the sink.
type component interface {
	Ready() bool
	Status() any
}

// health serves /metrics, /healthz, /readyz and /status.
//
// Readiness latches: once the configuration is valid and the first
// connections succeeded it stays ready, because cdcbridge usually runs as a
// sidecar and Kubernetes takes the whole pod out of its Service when one
// container is not ready; downstream trouble shows in /status and metrics.
// Liveness fails only when a registered loop stopped beating: the process
// is wedged and a restart would help.
type health struct {
	reg      *prometheus.Registry
	stallAge time.Duration

	mu         sync.Mutex
	loops      map[string]*atomic.Int64 // name -> unix nanos of the last beat
	components map[string]component
	ready      atomic.Bool
	started    time.Time
	now        func() time.Time
}

func newHealth(reg *prometheus.Registry, stallAge time.Duration) *health {
	return &health{
		reg:        reg,
		stallAge:   stallAge,
		loops:      map[string]*atomic.Int64{},
		components: map[string]component{},
		started:    time.Now(),
		now:        time.Now,
	}
}

// heartbeat registers a loop and returns the function it calls on every
// iteration, including while it waits normally.
func (h *health) heartbeat(name string) func() {
	v := new(atomic.Int64)
	v.Store(h.now().UnixNano())
	h.mu.Lock()
	h.loops[name] = v
	h.mu.Unlock()
	return func() { v.Store(h.now().UnixNano()) }
}

func (h *health) add(name string, c component) {
	h.mu.Lock()
	h.components[name] = c
	h.mu.Unlock()
}

// stalled returns the loops that have not beaten within stallAge.
func (h *health) stalled() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	var out []string
	for name, v := range h.loops {
		if age := now.Sub(time.Unix(0, v.Load())); age > h.stallAge {
			out = append(out, fmt.Sprintf("%s: no progress for %s", name, age.Round(time.Second)))
		}
	}
	sort.Strings(out)
	return out
}

// isReady reports readiness, latching it once every component is ready.
func (h *health) isReady() bool {
	if h.ready.Load() {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.components) == 0 {
		return false
	}
	for _, c := range h.components {
		if !c.Ready() {
			return false
		}
	}
	h.ready.Store(true)
	return true
}

func (h *health) status() map[string]any {
	out := map[string]any{
		"ready":          h.isReady(),
		"uptime_seconds": int64(time.Since(h.started).Seconds()),
		"version":        version,
	}
	if s := h.stalled(); len(s) > 0 {
		out["stalled"] = s
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, c := range h.components {
		out[name] = c.Status()
	}
	return out
}

func (h *health) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{Registry: h.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if s := h.stalled(); len(s) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "stalled", "stalled": s})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !h.isReady() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "starting"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, h.status())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// serve listens on addr and serves until ctx ends. The listener is opened
// before serve returns an error, so a bad address fails start-up at once.
func (h *health) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on CDCBRIDGE_HTTP_ADDR %s: %w", addr, err)
	}
	return ln, nil
}

func (h *health) serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	srv := &http.Server{Handler: h.handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Debug("http server shutdown", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
