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

// A snapshot continues on the standby that takes over: the job and its
// progress are in the shared store, so the new leader reads on from the
// last chunk the old one delivered, and a consumer of both holds exactly
// the table.
func TestSnapshotAcrossTakeover(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "hs", 20000)
	store := newMemStore()
	a, b := newSink(t), newSink(t)
	cfg := Config{URL: url, SnapshotChunkRows: 50}
	ra := startSource(t, cfg, store, a.emit)
	ra.streamingOnly(t)
	rb := startSource(t, cfg, store, b.emit)
	waitFor(t, 10*time.Second, "second instance standing by", func() bool {
		return rb.src.Ready() && rb.src.Status().(Status).Role == "standby"
	})
	w := startWriter(t, url, "hs", 20001)
	waitFor(t, 60*time.Second, "the first instance's snapshot under way", func() bool { return countReads(a) >= 2000 })

	var pid int
	if err := conn.QueryRow(context.Background(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = (($1::int8 >> 32) & 4294967295)::oid AND objid = ($1::int8 & 4294967295)::oid`, lockKey(slotFor(url))).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "SELECT pg_terminate_backend($1)", pid)
	waitFor(t, 10*time.Second, "first instance no longer active", func() bool { return ra.src.Status().(Status).Role != "active" })
	readA := countReads(a)
	if readA >= 20000 {
		t.Fatalf("the first instance read all %d rows before it lost the lock: the test tests nothing", readA)
	}
	waitFor(t, 30*time.Second, "second instance streaming", func() bool { return rb.src.Status().(Status).Role == "active" })
	rb.snapshotted(t)
	w.halt()
	converge(t, conn, "hs", func() []*cdc.Event { return append(append([]*cdc.Event{}, a.snapshot()...), b.snapshot()...) })
	// The table grows meanwhile, and the snapshot reads new rows too:
	// count the rows read twice.
	readB := countReads(b)
	rows := map[string]bool{}
	for _, e := range append(a.snapshot(), b.snapshot()...) {
		if e.Op == cdc.OpRead {
			rows[string(e.Key)] = true
		}
	}
	again := readA + readB - len(rows)
	t.Logf("reads: %d by the first instance, %d by the second, %d rows read again", readA, readB, again)
	if readB == 0 || again > 2*50 {
		t.Errorf("reads: %d by the first instance, %d by the second, %d rows read again; want the second to go on from the first's last chunk (at most two chunks again)", readA, readB, again)
	}
}
