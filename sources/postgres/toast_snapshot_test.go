package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// A snapshot read dropped because its row changed between the chunk's
// marks leaves the row to the stream. When that newer version is an
// update that leaves its unchanged TOAST values out (the default replica
// identity), a consumer that never had the row would lack those values:
// the row is read again with a later chunk. Applied in order, the stream
// gives every row its TOAST value.
func TestSnapshotUnchangedToastReadAgain(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	const rows = 1500
	// EXTERNAL storage keeps the 3 kB values out of line and uncompressed,
	// so an update of v alone sends them as unchanged TOAST.
	mustExec(t, conn, fmt.Sprintf(`CREATE TABLE tt (id int PRIMARY KEY, v int NOT NULL, big text NOT NULL);
		ALTER TABLE tt ALTER COLUMN big SET STORAGE EXTERNAL;
		INSERT INTO tt SELECT g, 0, repeat(md5(g::text), 100) FROM generate_series(1, %d) g`, rows))

	// The writer updates a tenth of the rows per transaction, never big,
	// so every chunk's window sees updates of its rows.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var txs atomic.Int64
	wconn := mustConn(t, url)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := wconn.Exec(ctx, `UPDATE tt SET v = v + 1 WHERE id % 10 = $1`, i%10); err != nil {
				if ctx.Err() == nil {
					t.Errorf("writer: %v", err)
				}
				return
			}
			txs.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	halt := func() { cancel(); wg.Wait() }
	defer halt()

	// The source is stopped twice during the snapshot: rows waiting to be
	// read again are kept with its state, and read after the restart.
	sk := newSink(t)
	store := newMemStore()
	cfg := Config{URL: url, SnapshotChunkRows: 50}
	kept := 0
	for i := range 2 {
		r := startSource(t, cfg, store, sk.emit)
		r.streamingOnly(t)
		waitFor(t, 60*time.Second, "snapshot progress", func() bool {
			for _, j := range r.src.Status().(Status).Snapshots {
				for _, tb := range j.Tables {
					if tb.Rows >= int64(300*(i+1)) || tb.State == tableDone {
						return true
					}
				}
			}
			return false
		})
		if err := r.stop(t); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("stopping the source: %v", err)
		}
		var st slotState
		mustUnmarshal(t, store.only(t).Data, &st)
		for _, j := range st.Snapshots {
			for _, tb := range j.Tables {
				kept += len(tb.Reread)
			}
		}
	}
	r := startSource(t, cfg, store, sk.emit)
	r.streamingOnly(t)
	r.snapshotted(t)
	halt()
	t.Logf("rows waiting to be read again at the stops: %d", kept)
	if txs.Load() < 20 {
		t.Fatalf("the writer committed only %d transactions", txs.Load())
	}

	var m *model
	waitFor(t, 60*time.Second, "the consumer's copy to match the table", func() bool {
		m = newModel()
		m.apply(sk.snapshot())
		ok, _ := m.matches(t, conn, "public.tt", "tt", "'id', id")
		return ok
	})
	if len(m.errs) > 0 {
		t.Errorf("%d consumer errors, first: %s", len(m.errs), m.errs[0])
	}
	if errs := m.orderErrors(); len(errs) > 0 {
		t.Errorf("%d keys out of order, first: %s", len(errs), errs[0])
	}
	// The case must have happened: rows whose first event was an update
	// without their TOAST value, each read after it.
	first := map[string]*cdc.Event{}
	read := map[string]bool{}
	for _, e := range sk.snapshot() {
		k := string(e.Key)
		if first[k] == nil {
			first[k] = e
		}
		if e.Op == cdc.OpRead {
			read[k] = true
		}
	}
	partialFirst := 0
	for k, e := range first {
		if e.Op == cdc.OpUpdate && len(e.UnchangedToast) > 0 {
			partialFirst++
			if !read[k] {
				t.Errorf("row %s: first an update without its TOAST value, and never read", k)
			}
		}
	}
	t.Logf("writer: %d transactions; rows first seen as an update without their TOAST value, then read: %d of %d", txs.Load(), partialFirst, rows)
	if partialFirst == 0 {
		t.Errorf("no row's read was dropped for an update without its TOAST value: the test tests nothing")
	}
}
