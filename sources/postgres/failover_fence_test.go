package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cdcbridge/cdcbridge/internal/fence"
)

// A leader whose lock session is terminated while its events wait in the
// sink revokes its sends at once (the gate refuses them from then on) and
// stops with fence.ErrFenced: those events must never be sent by it now.
func TestLeaderFencedOnLockLoss(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "f", 10)
	gate := fence.New(10 * time.Millisecond)
	a := newSink(t)
	ra := startSource(t, Config{URL: url, Fence: gate, LeaderTimeout: 2 * time.Second}, newMemStore(), a.emit)
	ra.streaming(t)
	waitFor(t, 30*time.Second, "the snapshot emitted", func() bool { return a.len() >= 10 })
	a.pause() // the sink stops acknowledging, as when Kinesis is slow
	mustExec(t, conn, "UPDATE f SET v = v + 1")
	waitFor(t, 30*time.Second, "the updates emitted", func() bool { return a.len() >= 20 })
	if dl, ok := gate.Deadline(); !ok || !dl.After(time.Now()) {
		t.Fatalf("gate deadline %v (bounded %v) while the leader holds the lock with events in flight; want ahead", dl, ok)
	}

	var pid int
	if err := conn.QueryRow(context.Background(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = (($1::int8 >> 32) & 4294967295)::oid AND objid = ($1::int8 & 4294967295)::oid`, lockKey(slotFor(url))).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "SELECT pg_terminate_backend($1)", pid)
	waitFor(t, 10*time.Second, "the gate closed", func() bool {
		dl, ok := gate.Deadline()
		return ok && !dl.After(time.Now())
	})
	select {
	case err := <-ra.done:
		ra.done <- err
		if !errors.Is(err, fence.ErrFenced) {
			t.Fatalf("Run ended with %v, want fence.ErrFenced", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the fenced leader did not stop")
	}
	if blocked := gate.Blocked(); len(blocked) != 1 {
		t.Errorf("gate blocked by %v, want the slot's hold", blocked)
	}
}

// Without events in flight a leader that lost the lock waits as a standby
// again, its hold gone from the gate.
func TestLeaderLossWithoutEventsInFlight(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "g", 5)
	gate := fence.New(10 * time.Millisecond)
	a := newSink(t)
	ra := startSource(t, Config{URL: url, Fence: gate, LeaderTimeout: 2 * time.Second}, newMemStore(), a.emit)
	ra.streaming(t)
	waitFor(t, 30*time.Second, "the snapshot emitted", func() bool { return a.len() >= 5 })
	var pid int
	if err := conn.QueryRow(context.Background(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = (($1::int8 >> 32) & 4294967295)::oid AND objid = ($1::int8 & 4294967295)::oid`, lockKey(slotFor(url))).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	reconnects := testutil.ToFloat64(ra.src.m.reconnects)
	mustExec(t, conn, "SELECT pg_terminate_backend($1)", pid)
	// The loss noticed first: until then the old session still reads as
	// active, and a change made now could reach it as it stops (then it
	// holds events of a lost leadership and rightly ends with fence.ErrFenced).
	waitFor(t, 30*time.Second, "the loss noticed", func() bool { return testutil.ToFloat64(ra.src.m.reconnects) > reconnects })
	waitFor(t, 30*time.Second, "the leader streaming again", func() bool {
		select {
		case err := <-ra.done:
			t.Fatalf("Run ended: %v", err)
		default:
		}
		return ra.src.Status().(Status).Role == "active" && ra.src.pos.Load() != nil
	})
	mustExec(t, conn, "UPDATE g SET v = v + 1")
	waitFor(t, 30*time.Second, "the updates emitted", func() bool { return a.len() >= 10 })
	if blocked := gate.Blocked(); len(blocked) != 0 {
		t.Errorf("gate blocked by %v after a clean loss", blocked)
	}
}
