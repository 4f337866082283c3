package dynamodb

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/cdcbridge/cdcbridge/checkpoint/file"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

type ackMode int

const (
	ackNow   ackMode = iota // in emit
	ackAsync                // later, from other goroutines, out of order
	ackNever                // the sink never accepts (a crash before delivery)
)

// collector is the sink of a test: it keeps every event in emit order.
type collector struct {
	mode   ackMode
	before func(e *cdc.Event) error // checked before an event is taken

	mu     sync.Mutex
	events []*cdc.Event
	cond   chan struct{} // closed and replaced on each event
	wg     sync.WaitGroup
}

func newCollector(mode ackMode) *collector {
	return &collector{mode: mode, cond: make(chan struct{})}
}

func (c *collector) emit(ctx context.Context, e *cdc.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.before != nil {
		if err := c.before(e); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.events = append(c.events, e)
	close(c.cond)
	c.cond = make(chan struct{})
	c.mu.Unlock()
	switch c.mode {
	case ackNow:
		e.Ack()
	case ackAsync:
		c.wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			e.Ack()
		})
	}
	return nil
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

func (c *collector) snapshot() []*cdc.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*cdc.Event(nil), c.events...)
}

// waitFor waits until at least n events arrived. It fails at once when
// the source's Run (if given) ends first.
func (c *collector) waitFor(t testing.TB, n int, timeout time.Duration, r ...*running) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var done chan error
	if len(r) > 0 {
		done = r[0].done
	}
	for {
		c.mu.Lock()
		got, ch := len(c.events), c.cond
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case err := <-done:
			done <- err
			t.Fatalf("Run ended with %v after %d events, want %d", err, got, n)
		case <-deadline.C:
			t.Fatalf("got %d events after %v, want %d", got, timeout, n)
		}
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func openFileStore(t testing.TB, path string) *file.Store {
	t.Helper()
	st, err := file.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// testCfg fills the intervals tests want short.
func testCfg(cfg Config) Config {
	if cfg.IdleInterval == 0 {
		cfg.IdleInterval = 20 * time.Millisecond
	}
	if cfg.DiscoverInterval == 0 {
		cfg.DiscoverInterval = 200 * time.Millisecond
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = 50 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 100 * time.Millisecond
	}
	if cfg.DescribeRate == 0 {
		cfg.DescribeRate = 50
	}
	return cfg
}

func newSource(t testing.TB, cfg Config, ddb *dynamodb.Client, streams *dynamodbstreams.Client, store checkpoint.Store) (*Source, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(testCfg(cfg), ddb, streams, store, reg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, reg
}

// running is a Source.Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, s *Source, emit cdc.Emit) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx, emit) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its error (nil for a plain cancellation).
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // later calls see the same
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context ending")
		return nil
	}
}

// wait returns Run's error once it ends by itself.
func (r *running) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("Run did not end within %v", timeout)
		return nil
	}
}

func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
