package postgres

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	filestore "github.com/cdcbridge/cdcbridge/checkpoint/file"
	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// privatePG starts a cluster of the test's own, for tests that restart or
// reconfigure it.
func privatePG(t *testing.T, settings map[string]string) (*testenv.Postgres, string) {
	t.Helper()
	pg, err := testenv.StartPostgres(testenv.PostgresOptions{Settings: settings})
	if err != nil {
		testenv.Unavailable(t, "postgres", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	if err := pg.CreateDatabase(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	return pg, pg.URL("app")
}

// Server restarts, fast, immediate and kill -9 (both crash recovery; the
// slot's position on disk may be older than what was confirmed), while the
// table is written: the source reconnects and resumes from the slot,
// nothing lost.
func TestServerRestart(t *testing.T) {
	pg, url := privatePG(t, nil)
	conn := mustConn(t, url)
	counterTable(t, conn, "r", 500)
	conn.Close(context.Background())
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Slot: "restart"}, newMemStore(), sk.emit)
	r.streaming(t)
	w := startWriter(t, url, "r", 501)
	for _, mode := range []string{"fast", "immediate", "kill"} {
		time.Sleep(300 * time.Millisecond)
		before := sk.len()
		if err := pg.Restart(mode); err != nil {
			t.Fatalf("restart %s: %v", mode, err)
		}
		waitFor(t, 60*time.Second, "events after the "+mode+" restart", func() bool { return sk.len() > before+50 })
	}
	w.halt()
	conn = mustConn(t, url)
	converge(t, conn, "r", sk.snapshot)
	if got := testutil.ToFloat64(r.src.m.reconnects); got < 3 {
		t.Errorf("reconnects counted: %v, want at least 3", got)
	}
}

// terminateAndDropSlot drops the slot behind the bridge's back: its
// walsender is terminated and the slot dropped before it reconnects.
func terminateAndDropSlot(t *testing.T, conn *pgx.Conn, slot string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, _ = conn.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", slot)
		if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("could not drop the slot")
}

func TestSlotDroppedFail(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO t VALUES (1)`)
	waitFor(t, 10*time.Second, "an event", func() bool { return sk.len() == 1 })
	terminateAndDropSlot(t, conn, slotFor(url))
	mustExec(t, conn, `INSERT INTO t VALUES (2)`) // lost with the slot
	select {
	case err := <-r.done:
		close(r.done)
		if err == nil || !strings.Contains(err.Error(), "CDCBRIDGE_POSTGRES_ON_SLOT_LOST") {
			t.Fatalf("Run returned %v, want an error explaining CDCBRIDGE_POSTGRES_ON_SLOT_LOST", err)
		}
		t.Logf("error: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not fail after the slot was dropped")
	}
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slotFor(url)).Scan(&n); err != nil || n != 0 {
		t.Errorf("a new slot was created silently (%d, %v)", n, err)
	}
	if got := testutil.ToFloat64(r.src.m.slotLost.WithLabelValues("fail")); got != 1 {
		t.Errorf("slot lost metric %v, want 1", got)
	}
}

func TestSlotDroppedResnapshot(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "d", 300)
	sk := newSink(t)
	store := newMemStore()
	r := startSource(t, Config{URL: url, OnSlotLost: OnSlotLostResnapshot}, store, sk.emit)
	r.streaming(t)
	w := startWriter(t, url, "d", 301)
	time.Sleep(200 * time.Millisecond)
	var st1 slotState
	mustUnmarshal(t, store.only(t).Data, &st1)
	terminateAndDropSlot(t, conn, slotFor(url))
	// Changes made while the slot was gone are lost from the stream; the
	// new snapshot brings the rows back, and everything after it streams.
	// The consumer model follows sequence order: the new snapshot's rows
	// replace what the gap left stale.
	var st2 slotState
	waitFor(t, 30*time.Second, "new state saved", func() bool {
		mustUnmarshal(t, store.only(t).Data, &st2)
		return st2.SnapshotComplete && st2.ConsistentPoint != st1.ConsistentPoint
	})
	r.snapshotted(t)
	time.Sleep(300 * time.Millisecond)
	w.halt()
	cp2 := mustLSN(t, st2.ConsistentPoint)
	var after []*cdc.Event
	for _, e := range sk.snapshot() {
		lsn := e.Info.CommitLSN
		if e.Op == cdc.OpRead {
			lsn = e.Info.ConsistentPoint // the read's place in the stream
		}
		if mustLSN(t, lsn) >= cp2 {
			after = append(after, e)
		}
	}
	// Rows inserted while the slot was gone existed before the new one.
	convergeWith(t, conn, "d", func() []*cdc.Event { return after }, func(*cdc.Event) bool { return true })
	if got := testutil.ToFloat64(r.src.m.slotLost.WithLabelValues("resnapshot")); got != 1 {
		t.Errorf("slot lost metric %v, want 1", got)
	}
}

// A slot invalidated because the server removed the WAL it needed
// (max_slot_wal_keep_size) counts as lost.
func TestSlotInvalidated(t *testing.T) {
	_, url := privatePG(t, map[string]string{"max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB", "min_wal_size": "32MB"})
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, pad text)`)
	store := newMemStore()
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Slot: "inval"}, store, sk.emit)
	r.streaming(t)
	r.stop(t)
	// Write WAL past the limit while nothing reads the slot.
	for i := 0; i < 6; i++ {
		mustExec(t, conn, `INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series($1::int * 20000, $1::int * 20000 + 19999) g`, i)
		mustExec(t, conn, `SELECT pg_switch_wal()`)
		mustExec(t, conn, `CHECKPOINT`)
	}
	var status string
	if err := conn.QueryRow(context.Background(), "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'inval'").Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status != "lost" {
		t.Fatalf("wal_status %q, want lost (the test could not invalidate the slot)", status)
	}
	r2 := startSource(t, Config{URL: url, Slot: "inval"}, store, newSink(t).emit)
	select {
	case err := <-r2.done:
		close(r2.done)
		if err == nil || !strings.Contains(err.Error(), "wal_status = lost") {
			t.Fatalf("Run returned %v, want the slot reported lost", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not fail on the invalidated slot")
	}
}

// A first run against a slot that exists (the store has no record of it)
// streams from the slot without a snapshot and records that it did.
func TestExistingSlotAdopted(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1); CREATE PUBLICATION cdcbridge FOR TABLE t`)
	mustExec(t, conn, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slotFor(url))
	mustExec(t, conn, `INSERT INTO t VALUES (2)`) // after the slot: streamed
	store := newMemStore()
	sk := newSink(t)
	r := startSource(t, Config{URL: url}, store, sk.emit)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO t VALUES (3)`)
	waitFor(t, 10*time.Second, "2 events", func() bool { return sk.len() >= 2 })
	var got []string
	for _, e := range sk.snapshot() {
		got = append(got, e.Op.String()+string(e.Key))
	}
	if strings.Join(got, " ") != `insert{"id":2} insert{"id":3}` {
		t.Errorf("events %v, want the inserts after the slot and no snapshot", got)
	}
	var st slotState
	mustUnmarshal(t, store.only(t).Data, &st)
	if st.Snapshot != "adopted" || !st.SnapshotComplete {
		t.Errorf("state %+v", st)
	}
}

// A slot created before its publication cannot be decoded past that
// point: a fatal error that says what to do, not an endless reconnect.
func TestSlotOlderThanPublication(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	mustExec(t, conn, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slotFor(url))
	mustExec(t, conn, `INSERT INTO t VALUES (1)`)
	// Before 18 the server cannot decode past the point where the
	// publication did not exist; from 18 on it skips those changes with a
	// warning, which the bridge must not accept either.
	why := "cannot decode its changes"
	if serverVersionNum(t, conn) >= 180000 {
		why = "PostgreSQL 18 skips with a warning"
	}
	sk := newSink(t)
	r := startSource(t, Config{URL: url}, newMemStore(), sk.emit)
	select {
	case err := <-r.done:
		close(r.done)
		if err == nil || !strings.Contains(err.Error(), "Drop the slot") || !strings.Contains(err.Error(), why) || !isFatal(err) {
			t.Fatalf("Run returned %v, want a fatal error saying %q and how to go on", err, why)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not fail")
	}
	if n := sk.len(); n != 0 {
		t.Errorf("%d events emitted from a slot that misses changes", n)
	}
}

// on-slot-lost=continue: a new slot without a snapshot, loudly, counted
// and shown in Status.
func TestSlotDroppedContinue(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	store := newMemStore()
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, store, newSink(t).emit)
	r.streaming(t)
	r.stop(t)
	terminateAndDropSlot(t, conn, slotFor(url))   // its walsender may still be exiting
	mustExec(t, conn, `INSERT INTO t VALUES (1)`) // in the gap
	sk := newSink(t)
	r2 := startSource(t, Config{URL: url, OnSlotLost: OnSlotLostContinue}, store, sk.emit)
	r2.streaming(t)
	mustExec(t, conn, `INSERT INTO t VALUES (2)`)
	waitFor(t, 10*time.Second, "an event", func() bool { return sk.len() >= 1 })
	if e := sk.snapshot()[0]; e.Op != cdc.OpInsert || string(e.Key) != `{"id":2}` {
		t.Errorf("first event %s %s, want the insert after the new slot (no snapshot)", e.Op, e.Key)
	}
	if got := testutil.ToFloat64(r2.src.m.slotLost.WithLabelValues("continue")); got != 1 {
		t.Errorf("slot lost metric %v", got)
	}
	st := r2.src.Status().(Status)
	if !strings.Contains(strings.Join(st.Degraded, ";"), "gap") {
		t.Errorf("status degraded %v, want the gap named", st.Degraded)
	}
}

// Checkpoint saves that keep failing (the store's directory replaced by
// a file, which stops root too) stop the source with an error naming the
// store once CheckpointFailureLimit has passed, rather than leave it
// running degraded forever.
func TestCheckpointStoreFailureStops(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, "CREATE TABLE f (id int PRIMARY KEY, v int)")
	dir := filepath.Join(t.TempDir(), "state")
	store, err := filestore.Open(filepath.Join(dir, "checkpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	sk := newSink(t)
	r := startSource(t, Config{URL: url, CheckpointFailureLimit: 500 * time.Millisecond}, store, sk.emit)
	r.streaming(t)
	if err := os.Rename(dir, dir+".aside"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for i := 0; ; i++ {
		mustExec(t, conn, "INSERT INTO f VALUES ($1, 0)", i)
		select {
		case err := <-r.done:
			r.done <- err
			if !isFatal(err) || !strings.Contains(err.Error(), "checkpoint store could not save") {
				t.Fatalf("Run: %v, want a fatal error naming the checkpoint store", err)
			}
			return
		case <-deadline:
			t.Fatal("the source still runs 30s after its checkpoint saves began to fail")
		case <-time.After(100 * time.Millisecond):
		}
	}
}
