package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// memStore is an in-memory checkpoint.Store that, like the real ones,
// refuses positions that move backwards.
type memStore struct {
	mu    sync.Mutex
	m     map[string]checkpoint.Checkpoint
	saves int
}

func newMemStore() *memStore { return &memStore{m: map[string]checkpoint.Checkpoint{}} }

func (s *memStore) Load(_ context.Context, key string) (checkpoint.Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[key]
	if !ok {
		return checkpoint.Checkpoint{}, checkpoint.ErrNotFound
	}
	return c, nil
}

func (s *memStore) Save(_ context.Context, key string, c checkpoint.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[key]; ok && c.Position < old.Position {
		return checkpoint.ErrStale
	}
	s.m[key] = c
	s.saves++
	return nil
}

func (s *memStore) Close() error { return nil }

// only returns the single slot state in the store (besides the record of
// the system streamed from at the configured address).
func (s *memStore) only(t *testing.T) checkpoint.Checkpoint {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var states []checkpoint.Checkpoint
	for k, c := range s.m {
		if strings.HasPrefix(k, "postgres/") {
			states = append(states, c)
		} else if !strings.HasPrefix(k, "postgres-endpoint/") {
			t.Fatalf("unexpected key %q in the store", k)
		}
	}
	if len(states) != 1 {
		t.Fatalf("store has %d slot states, want 1", len(states))
	}
	return states[0]
}

// sink collects events. It acknowledges each one (unless paused) and
// checks that every event encodes to a valid envelope.
type sink struct {
	t      *testing.T
	mu     sync.Mutex
	events []*cdc.Event
	paused bool // hold acks
	held   []*cdc.Event
	keep   bool // keep events (false: count only, for big volumes)
	count  int
	onEmit func(*cdc.Event)
}

func newSink(t *testing.T) *sink { return &sink{t: t, keep: true} }

func (s *sink) emit(ctx context.Context, e *cdc.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := cdc.Encode(e); err != nil {
		s.t.Errorf("event does not encode: %v", err)
	}
	s.mu.Lock()
	s.count++
	if s.keep {
		s.events = append(s.events, e)
	}
	if s.onEmit != nil {
		s.onEmit(e)
	}
	if s.paused {
		s.held = append(s.held, e)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	e.Ack()
	return nil
}

func (s *sink) pause() {
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
}

func (s *sink) resume() {
	s.mu.Lock()
	held := s.held
	s.held, s.paused = nil, false
	s.mu.Unlock()
	for _, e := range held {
		e.Ack()
	}
}

func (s *sink) snapshot() []*cdc.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*cdc.Event(nil), s.events...)
}

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// running is a Source running in the background.
type running struct {
	src    *Source
	cancel context.CancelFunc
	done   chan error
}

func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("CDCBRIDGE_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func startSource(t *testing.T, cfg Config, store checkpoint.Store, emit cdc.Emit) *running {
	t.Helper()
	if cfg.Slot == "" {
		// Slots are cluster-wide; each test's database gets its own.
		cfg.Slot = slotFor(cfg.URL)
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 200 * time.Millisecond
	}
	if cfg.PublicationSyncInterval == 0 {
		cfg.PublicationSyncInterval = 200 * time.Millisecond
	}
	src, err := New(cfg, store, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, emit) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the source and waits for Run to return.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("source did not stop within 30s")
		return nil
	}
}

// streaming waits until the source streams (its positions exist).
// streaming waits until the source streams and its snapshots are done
// (every read accepted), so that a test's changes come after them.
func (r *running) streaming(t *testing.T) {
	t.Helper()
	r.streamingOnly(t)
	r.snapshotted(t)
}

// streamingOnly waits until the source streams, snapshots or not.
func (r *running) streamingOnly(t *testing.T) {
	t.Helper()
	waitFor(t, 60*time.Second, "source streaming", func() bool {
		select {
		case err := <-r.done:
			t.Fatalf("Run returned before streaming: %v", err)
		default:
		}
		return r.src.pos.Load() != nil
	})
}

// snapshotted waits until the source's snapshots are done.
func (r *running) snapshotted(t *testing.T) {
	t.Helper()
	waitFor(t, 120*time.Second, "snapshots done", func() bool {
		select {
		case err := <-r.done:
			t.Fatalf("Run returned before its snapshots were done: %v", err)
		default:
		}
		for _, j := range r.src.Status().(Status).Snapshots {
			if j.Finished == "" {
				return false
			}
		}
		return true
	})
}

// slotFor names a test's slot after its database.
func slotFor(url string) string {
	u := url[strings.LastIndex(url, "/")+1:]
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	return u
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var errStopped = errors.New("stopped")

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

func mustLSN(t *testing.T, s string) uint64 {
	t.Helper()
	lsn, err := parseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}
