package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func slotConfirmed(t *testing.T, conn *pgx.Conn, slot string) uint64 {
	t.Helper()
	var s *string
	if err := conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s); err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return 0
	}
	return mustLSN(t, *s)
}

func currentLSN(t *testing.T, conn *pgx.Conn) uint64 {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	return mustLSN(t, s)
}

// An idle slot must not hold WAL while other databases of the cluster
// write: with nothing in flight, the keepalive's position is confirmed.
func TestIdleSlotAdvances(t *testing.T) {
	pg, url := newDB(t)
	ctx := context.Background()
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE quiet (id int PRIMARY KEY)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)
	slot := slotFor(url)

	other := "other_" + slot
	if len(other) > 60 {
		other = other[:60]
	}
	if err := pg.CreateDatabase(ctx, other); err != nil {
		t.Fatal(err)
	}
	oconn := mustConn(t, pg.URL(other))
	mustExec(t, oconn, `CREATE TABLE busy AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g`)
	target := currentLSN(t, oconn)
	waitFor(t, 20*time.Second, "idle slot confirmed past the other database's writes", func() bool {
		return slotConfirmed(t, conn, slot) >= target
	})
	if sk.len() != 0 {
		t.Errorf("%d events from an idle database", sk.len())
	}
}

// Nothing is confirmed past an unacknowledged event, however many
// keepalives arrive; once acknowledged, the position moves on.
func TestNoConfirmPastUnacked(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)
	slot := slotFor(url)
	mustExec(t, conn, `INSERT INTO t VALUES (1)`)
	waitFor(t, 10*time.Second, "first event", func() bool { return sk.len() == 1 })
	before := currentLSN(t, conn)
	waitFor(t, 10*time.Second, "confirmed past the first transaction", func() bool { return slotConfirmed(t, conn, slot) >= before })

	sk.pause()
	mustExec(t, conn, `INSERT INTO t VALUES (2)`)
	waitFor(t, 10*time.Second, "second event", func() bool { return sk.len() == 2 })
	end := mustLSN(t, sk.snapshot()[1].Info.TxEndLSN)
	// Later WAL from elsewhere brings keepalives with positions past it.
	mustExec(t, conn, `CREATE TABLE unpublished_later AS SELECT 1 AS x; SELECT pg_switch_wal()`)
	deadline := time.Now().Add(2 * time.Second) // ten status intervals
	for time.Now().Before(deadline) {
		if c := slotConfirmed(t, conn, slot); c >= end {
			t.Fatalf("slot confirmed %X, past the unacknowledged transaction ending at %X", c, end)
		}
		if c := r.src.pos.Load().current(); c >= end {
			t.Fatalf("source confirmed %X, past the unacknowledged transaction ending at %X", c, end)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sk.resume()
	waitFor(t, 10*time.Second, "confirmed after the ack", func() bool { return slotConfirmed(t, conn, slot) >= end })
}

// Acknowledged changes are confirmed to the server within about a second,
// not only at the status interval: a bridge that crashes more often than
// the interval would otherwise never move its slot, and would send a
// growing backlog again on every restart.
func TestProgressConfirmedSoon(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE moving (id int PRIMARY KEY)`)
	sk := newSink(t)
	slot := slotFor(url)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever, StatusInterval: time.Hour}, newMemStore(), sk.emit)
	r.streaming(t)
	start := slotConfirmed(t, conn, slot)
	for i := range 3 {
		mustExec(t, conn, `INSERT INTO moving VALUES ($1)`, i)
		end := currentLSN(t, conn)
		waitFor(t, 10*time.Second, "the slot to confirm the acknowledged insert", func() bool {
			return slotConfirmed(t, conn, slot) >= end
		})
	}
	if got := slotConfirmed(t, conn, slot); got <= start {
		t.Fatalf("confirmed %X, not past %X", got, start)
	}
}
