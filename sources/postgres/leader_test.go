package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// Two instances on one slot: the second waits as a hot standby and takes
// over when the first's lock session is killed; the first stops emitting
// at once, and no change is lost across the handover.
func TestStandbyTakesOver(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "h", 100)
	store := newMemStore()
	a, b := newSink(t), newSink(t)
	ra := startSource(t, Config{URL: url}, store, a.emit)
	ra.streaming(t)
	rb := startSource(t, Config{URL: url}, store, b.emit)
	waitFor(t, 10*time.Second, "second instance standing by", func() bool {
		return rb.src.Ready() && rb.src.Status().(Status).Role == "standby"
	})
	w := startWriter(t, url, "h", 101)
	time.Sleep(300 * time.Millisecond)
	if b.len() != 0 {
		t.Fatalf("the standby emitted %d events", b.len())
	}
	if got := ra.src.Status().(Status).Role; got != "active" {
		t.Fatalf("first instance role %q", got)
	}

	// Kill the first instance's lock session.
	var pid int
	if err := conn.QueryRow(context.Background(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = (($1::int8 >> 32) & 4294967295)::oid AND objid = ($1::int8 & 4294967295)::oid`, lockKey(slotFor(url))).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var lostAt time.Time
	var afterLoss int
	a.mu.Lock()
	a.onEmit = func(e *cdc.Event) {
		if !lostAt.IsZero() {
			afterLoss++
		}
	}
	a.mu.Unlock()
	// The source stops within the lock watch's reaction time; events it
	// had already handed over before are not counted.
	mustExec(t, conn, "SELECT pg_terminate_backend($1)", pid)
	waitFor(t, 10*time.Second, "first instance no longer active", func() bool { return ra.src.Status().(Status).Role != "active" })
	a.mu.Lock()
	lostAt = time.Now()
	a.mu.Unlock()
	waitFor(t, 30*time.Second, "second instance streaming", func() bool { return rb.src.pos.Load() != nil && b.len() > 0 })
	time.Sleep(300 * time.Millisecond)
	w.halt()
	a.mu.Lock()
	if afterLoss > 0 {
		t.Errorf("the first instance emitted %d events after it lost the lock", afterLoss)
	}
	a.mu.Unlock()
	if got := rb.src.Status().(Status).Role; got != "active" {
		t.Errorf("second instance role %q", got)
	}
	// The first instance now waits as the standby.
	waitFor(t, 10*time.Second, "first instance standing by", func() bool { return ra.src.Status().(Status).Role == "standby" })
	seed := readRowsOf(t, conn, "h", 100)
	converge(t, conn, "h", func() []*cdc.Event {
		return append(append(seed, a.snapshot()...), b.snapshot()...)
	})
}
