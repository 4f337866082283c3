package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type fakeComponent struct {
	ready  atomic.Bool
	status map[string]any
}

func (f *fakeComponent) Ready() bool { return f.ready.Load() }
func (f *fakeComponent) Status() any { return f.status }

func get(t *testing.T, h http.Handler, path string) (int, map[string]any, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var body map[string]any
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return rec.Code, body, rec.Body.String()
}

func TestReadinessLatches(t *testing.T) {
	h := newHealth(prometheus.NewRegistry(), time.Minute)
	src, snk := &fakeComponent{status: map[string]any{"role": "active"}}, &fakeComponent{status: map[string]any{"degraded": []string{}}}
	h.add("source", src)
	h.add("sink", snk)
	srv := h.handler()

	if code, _, _ := get(t, srv, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before connecting = %d, want 503", code)
	}
	src.ready.Store(true)
	if code, _, _ := get(t, srv, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the sink not connected = %d, want 503", code)
	}
	snk.ready.Store(true)
	if code, _, _ := get(t, srv, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after both connected = %d, want 200", code)
	}
	// Downstream trouble later must not take the pod out of its Service.
	snk.ready.Store(false)
	snk.status = map[string]any{"degraded": []string{"throttled"}}
	if code, _, _ := get(t, srv, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz flipped on downstream trouble: %d", code)
	}
	code, body, _ := get(t, srv, "/status")
	if code != http.StatusOK || body["ready"] != true {
		t.Fatalf("/status = %d %v", code, body)
	}
	if sink, _ := body["sink"].(map[string]any); sink == nil || len(sink["degraded"].([]any)) != 1 {
		t.Fatalf("/status does not show the sink's degraded reason: %v", body)
	}
}

func TestLivenessFlagsStalledLoop(t *testing.T) {
	h := newHealth(prometheus.NewRegistry(), 30*time.Second)
	now := time.Unix(1000, 0)
	h.now = func() time.Time { return now }
	beatSource := h.heartbeat("source")
	h.heartbeat("sink")
	srv := h.handler()
	if code, _, _ := get(t, srv, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d, want 200", code)
	}
	now = now.Add(20 * time.Second)
	beatSource()
	now = now.Add(20 * time.Second) // sink silent for 40s, source for 20s
	code, body, _ := get(t, srv, "/healthz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz with a stalled loop = %d, want 503", code)
	}
	stalled := body["stalled"].([]any)
	if len(stalled) != 1 || !strings.HasPrefix(stalled[0].(string), "sink:") {
		t.Fatalf("stalled = %v, want only the sink", stalled)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	h := newHealth(reg, time.Minute)
	code, _, body := get(t, h.handler(), "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics = %d:\n%.300s", code, body)
	}
}
