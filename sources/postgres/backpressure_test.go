package postgres

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// While the sink blocks, status updates keep going out at a third of
// wal_sender_timeout (here 1.5s, with StatusInterval left at 10s), so the
// server keeps the replication connection.
func TestStatusUpdatesUnderBackPressure(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE bp (id int PRIMARY KEY, pad text)`)
	block := make(chan struct{})
	var delivered atomic.Int64
	emit := func(ctx context.Context, e *cdc.Event) error {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
		delivered.Add(1)
		e.Ack()
		return nil
	}
	r := startSource(t, Config{URL: url + "&options=-c%20wal_sender_timeout%3D1500ms", Snapshot: SnapshotNever, StatusInterval: 10 * time.Second},
		newMemStore(), emit)
	r.streaming(t)
	slot := slotFor(url)
	const rows = 50000
	mustExec(t, conn, `INSERT INTO bp SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, $1::int) g`, rows)
	var pid int
	waitFor(t, 10*time.Second, "an active walsender", func() bool {
		_ = conn.QueryRow(context.Background(), "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&pid)
		return pid != 0
	})
	deadline := time.Now().Add(5 * time.Second) // more than three timeouts
	for time.Now().Before(deadline) {
		var now, age float64
		err := conn.QueryRow(context.Background(), `SELECT coalesce(s.active_pid, 0), coalesce(extract(epoch FROM now() - r.reply_time), 999)
			FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1`, slot).Scan(&now, &age)
		if err != nil {
			t.Fatal(err)
		}
		if int(now) != pid {
			t.Fatalf("walsender %d replaced by %v while the sink blocked: the server timed the connection out", pid, now)
		}
		if age > 1.5 {
			t.Fatalf("last status update %.1fs old while the sink blocked", age)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if delivered.Load() != 0 {
		t.Fatalf("%d events delivered through a blocked sink", delivered.Load())
	}
	close(block)
	waitFor(t, 60*time.Second, "every row", func() bool { return delivered.Load() == rows })
}
