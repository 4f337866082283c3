package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/jackc/pgx/v5"
)

// counterTable is a table whose rows count their own updates: every
// update sets v = v + 1, new rows start at 0 and ids are never reused. A
// consumer that sees a row's update with any v other than the last one
// plus one has seen a gap or an overlap.
func counterTable(t *testing.T, conn *pgx.Conn, name string, rows int) {
	t.Helper()
	mustExec(t, conn, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v int NOT NULL, pad text);
		INSERT INTO %[1]s SELECT g, 0, md5(g::text) FROM generate_series(1, %d) g`, name, rows))
}

// counterCheck checks the counter tables' invariant: inserts start at
// v=0, each update adds one, and a read reflects every change of its row
// delivered before it. A row that existed before the slot (pad is not
// "new", or preexisting says so) may first show as an update: its chunk
// had not been read yet, or its read was dropped because the stream
// carried a newer version.
func counterCheck(preexisting func(e *cdc.Event) bool) func(e *cdc.Event, prev map[string]any) error {
	return func(e *cdc.Event, prev map[string]any) error {
		var after struct{ V int }
		if e.Op != cdc.OpDelete {
			if err := json.Unmarshal(e.After, &after); err != nil {
				return err
			}
		}
		switch e.Op {
		case cdc.OpInsert:
			if prev != nil {
				return fmt.Errorf("insert of a row the consumer already has")
			}
			if after.V != 0 {
				return fmt.Errorf("insert with v=%d", after.V)
			}
		case cdc.OpUpdate:
			if prev == nil {
				var row struct{ Pad string }
				_ = json.Unmarshal(e.After, &row)
				if row.Pad != "new" || preexisting(e) {
					return nil
				}
				return fmt.Errorf("update of a row the consumer never saw (gap)")
			}
			pv, _ := prev["v"].(json.Number).Int64()
			if int64(after.V) != pv+1 {
				return fmt.Errorf("v went from %d to %d (gap or overlap)", pv, after.V)
			}
		case cdc.OpRead:
			if prev != nil {
				if pv, _ := prev["v"].(json.Number).Int64(); int64(after.V) != pv {
					return fmt.Errorf("read with v=%d after a change to v=%d", after.V, pv)
				}
			}
		}
		// A delete of a row the consumer never saw is one whose chunk had
		// not been read yet: it leaves the replica right.
		return nil
	}
}

// writer changes a counter table until stopped: mostly single-row
// increments, some inserts and deletes, each its own transaction. It
// rides out server restarts by reconnecting.
type writer struct {
	stop   chan struct{}
	done   chan struct{}
	txs    atomic.Int64
	failed atomic.Int64

	mu       sync.Mutex
	insertAt map[int]uint64 // per inserted id, the WAL insert position during its insert (its commit is later)
}

// insertedBefore reports, for an event of a row the writer inserted,
// whether the insert may have committed before lsn (the slot's
// consistent point): such a row is not in the stream as an insert.
func (w *writer) insertedBefore(t *testing.T, lsn uint64) func(e *cdc.Event) bool {
	return func(e *cdc.Event) bool {
		var key struct{ ID int }
		if err := json.Unmarshal(e.Key, &key); err != nil {
			t.Errorf("key %s: %v", e.Key, err)
			return false
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		at, ok := w.insertAt[key.ID]
		return !ok || at < lsn
	}
}

func startWriter(t *testing.T, url, table string, firstNewID int) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{}), insertAt: map[int]uint64{}}
	go func() {
		defer close(w.done)
		ctx := context.Background()
		var conn *pgx.Conn
		next := firstNewID
		rng := rand.New(rand.NewPCG(1, uint64(firstNewID)))
		for {
			select {
			case <-w.stop:
				if conn != nil {
					conn.Close(ctx)
				}
				return
			default:
			}
			if conn == nil {
				c, err := connectNormal(ctx, url)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				conn = c
			}
			var err error
			switch p := rng.IntN(100); {
			case p < 8:
				var at string
				err = conn.QueryRow(ctx, fmt.Sprintf("INSERT INTO %s VALUES ($1, 0, 'new') RETURNING pg_current_wal_insert_lsn()::text", table), next).Scan(&at)
				if err == nil {
					if lsn, perr := parseLSN(at); perr == nil {
						w.mu.Lock()
						w.insertAt[next] = lsn
						w.mu.Unlock()
					}
					next++
				}
			case p < 12:
				_, err = conn.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE id = $1", table), 1+rng.IntN(next))
			case p < 20:
				// A transaction of several changes.
				_, err = conn.Exec(ctx, fmt.Sprintf("UPDATE %s SET v = v + 1 WHERE id IN (%d, %d, %d)", table,
					1+rng.IntN(next), 1+rng.IntN(next), 1+rng.IntN(next)))
			default:
				_, err = conn.Exec(ctx, fmt.Sprintf("UPDATE %s SET v = v + 1 WHERE id = $1", table), 1+rng.IntN(next))
			}
			if err != nil {
				w.failed.Add(1)
				conn.Close(ctx)
				conn = nil
				continue
			}
			w.txs.Add(1)
			time.Sleep(500 * time.Microsecond)
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// converge waits until the model built from delivered() equals the table,
// then checks order and the counter invariant.
func converge(t *testing.T, conn *pgx.Conn, table string, delivered func() []*cdc.Event) *model {
	t.Helper()
	return convergeWith(t, conn, table, delivered, func(*cdc.Event) bool { return false })
}

// convergeWith is converge where preexisting tells which rows the
// consumer may first see changed (rows inserted before the slot existed).
func convergeWith(t *testing.T, conn *pgx.Conn, table string, delivered func() []*cdc.Event, preexisting func(*cdc.Event) bool) *model {
	t.Helper()
	var m *model
	var diff string
	deadline := time.Now().Add(60 * time.Second)
	for {
		m = newModel()
		m.check = counterCheck(preexisting)
		m.apply(delivered())
		ok, d := m.matches(t, conn, "public."+table, table, "'id', id")
		if ok {
			break
		}
		diff = d
		if time.Now().After(deadline) {
			t.Fatalf("the consumer's copy of %s never matched the table; last diff (-table +consumer):\n%s", table, truncate(diff, 4000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(m.errs) > 0 {
		t.Errorf("%d consumer check failures, first: %s", len(m.errs), strings.Join(m.errs[:min(5, len(m.errs))], "\n"))
	}
	if errs := m.orderErrors(); len(errs) > 0 {
		t.Errorf("%d keys out of order, first: %s", len(errs), errs[0])
	}
	return m
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// The initial snapshot hands over to streaming without gap or overlap
// while the table is being written.
func TestSnapshotConcurrentWrites(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "c", 3000)
	w := startWriter(t, url, "c", 3001)
	time.Sleep(100 * time.Millisecond)
	sk := newSink(t)
	store := newMemStore()
	r := startSource(t, Config{URL: url, SnapshotChunkRows: 100}, store, sk.emit)
	r.streamingOnly(t)
	time.Sleep(500 * time.Millisecond)
	r.snapshotted(t)
	w.halt()
	if w.txs.Load() < 100 {
		t.Fatalf("writer committed only %d transactions", w.txs.Load())
	}
	var st slotState
	mustUnmarshal(t, store.only(t).Data, &st)
	// Rows the writer inserted before the slot existed are read by the
	// snapshot, and may first show as an update (their read dropped for
	// a newer version); a row inserted after it must show its insert.
	m := convergeWith(t, conn, "c", sk.snapshot, w.insertedBefore(t, mustLSN(t, st.ConsistentPoint)))
	// No overlap also means no repeated ids in a run without failures.
	ids := map[string]bool{}
	var reads, changes int
	for _, e := range sk.snapshot() {
		if ids[e.ID] {
			t.Errorf("id %s delivered twice", e.ID)
		}
		ids[e.ID] = true
		if e.Op == cdc.OpRead {
			reads++
		} else {
			changes++
		}
	}
	t.Logf("writer: %d transactions; events: %d read, %d changes; keys %d", w.txs.Load(), reads, changes, len(m.rows["public.c"]))
	if reads < 3000 || changes == 0 {
		t.Errorf("reads %d, changes %d", reads, changes)
	}
}

// frozenStore refuses every save while frozen: the store is out of reach
// from then on, as for a process that dies before its next save. The
// source confirms to the server only what it saved, so the slot stays
// where the store says.
type frozenStore struct {
	*memStore
	frozen atomic.Bool
}

func (s *frozenStore) Save(ctx context.Context, key string, c checkpoint.Checkpoint) error {
	if s.frozen.Load() {
		return errors.New("frozen store: unreachable")
	}
	return s.memStore.Save(ctx, key, c)
}

// ackLimit returns an emit that acknowledges the first n events and holds
// the rest (the sink never accepted them), recording what was accepted.
type ackLimit struct {
	mu       sync.Mutex
	n        int
	accepted []*cdc.Event
	emitted  int
}

func (a *ackLimit) emit(ctx context.Context, e *cdc.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	a.emitted++
	ack := len(a.accepted) < a.n
	if ack {
		a.accepted = append(a.accepted, e)
	}
	a.mu.Unlock()
	if ack {
		e.Ack()
	}
	return nil
}

func (a *ackLimit) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.emitted
}

// A source stopped mid-stream without a final save: a fresh one on the
// same store and slot delivers every change the first did not get
// accepted, in order per row.
func TestCrashMidStream(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "k", 200)
	store := &frozenStore{memStore: newMemStore()}
	first := &ackLimit{n: 300}
	r1 := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, store, first.emit)
	r1.streaming(t)
	w := startWriter(t, url, "k", 201)
	waitFor(t, 30*time.Second, "first source past its ack limit", func() bool { return first.count() > 400 })
	store.frozen.Store(true)
	r1.stop(t)
	store.frozen.Store(false)
	time.Sleep(200 * time.Millisecond) // writes while no bridge runs
	second := newSink(t)
	r2 := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, store, second.emit)
	r2.streaming(t)
	time.Sleep(300 * time.Millisecond)
	w.halt()
	// The rows existed before the slot: seed the consumer with them.
	seed := readRows(t, conn, 200)
	converge(t, conn, "k", func() []*cdc.Event {
		return append(append(seed, first.accepted...), second.snapshot()...)
	})
	if len(second.snapshot()) == 0 {
		t.Fatal("second source delivered nothing")
	}
	// The second run repeats at most what the first emitted but did not
	// get accepted, plus what followed.
	if first.emitted <= first.n {
		t.Fatalf("first source emitted %d events, not past its limit %d", first.emitted, first.n)
	}
}

// readRows fakes read events for the rows 1..n of k as first inserted (v=0).
func readRows(t *testing.T, conn *pgx.Conn, n int) []*cdc.Event { return readRowsOf(t, conn, "k", n) }

func readRowsOf(t *testing.T, conn *pgx.Conn, table string, n int) []*cdc.Event {
	var out []*cdc.Event
	for i := 1; i <= n; i++ {
		out = append(out, &cdc.Event{ID: fmt.Sprintf("seed:%d", i), Subject: "public." + table, Op: cdc.OpRead,
			Key: []byte(fmt.Sprintf(`{"id":%d}`, i)), PartitionKey: fmt.Sprintf("public.%s:[%d]", table, i), Sequence: "0",
			After: []byte(fmt.Sprintf(`{"id":%d,"v":0,"pad":"%s"}`, i, md5hex(t, conn, i)))})
	}
	return out
}

func md5hex(t *testing.T, conn *pgx.Conn, i int) string {
	var s string
	if err := conn.QueryRow(context.Background(), "SELECT md5($1::int::text)", i).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A source stopped in the middle of its initial snapshot: the next one
// goes on with the same slot from the last delivered chunk, and a consumer
// applying everything both delivered holds exactly the table: no row the
// table deleted meanwhile stays behind.
func TestCrashMidSnapshot(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "m", 5000)
	store := &frozenStore{memStore: newMemStore()}
	w := startWriter(t, url, "m", 5001)
	first := &ackLimit{n: 1000}
	r1 := startSource(t, Config{URL: url, SnapshotChunkRows: 100}, store, first.emit)
	r1.streamingOnly(t)
	waitFor(t, 30*time.Second, "first snapshot under way", func() bool { return first.count() > 1100 })
	store.frozen.Store(true)
	r1.stop(t)
	store.frozen.Store(false)
	var st slotState
	mustUnmarshal(t, store.only(t).Data, &st)
	if !st.SnapshotComplete || st.ConsistentPoint == "" || len(st.Snapshots) != 1 {
		t.Fatalf("state after the crash: %+v", st)
	}
	job := st.Snapshots[0]
	if job.Finished != "" || len(job.Tables) != 1 || job.Tables[0].State != tableReading || job.Tables[0].LastKey == nil {
		t.Fatalf("snapshot after the crash: %+v %+v", job, job.Tables)
	}
	readBefore := job.Tables[0].Rows
	second := newSink(t)
	r2 := startSource(t, Config{URL: url, SnapshotChunkRows: 100}, store, second.emit)
	r2.streaming(t)
	time.Sleep(300 * time.Millisecond)
	w.halt()
	all := func() []*cdc.Event { return append(append([]*cdc.Event{}, first.accepted...), second.snapshot()...) }
	converge(t, conn, "m", all)
	var st2 slotState
	mustUnmarshal(t, store.only(t).Data, &st2)
	if st2.ConsistentPoint != st.ConsistentPoint || st2.CreatedAt != st.CreatedAt {
		t.Errorf("the slot was created again: state %+v, before %+v", st2, st)
	}
	if len(st2.Snapshots) != 1 || st2.Snapshots[0].Finished == "" || st2.Snapshots[0].Tables[0].State != tableDone {
		t.Errorf("snapshot after the second run: %+v", st2.Snapshots)
	}
	// The second run starts after the last chunk the first saved: it
	// reads the rest, and at most the one chunk in flight again.
	reads := 0
	for _, e := range second.snapshot() {
		if e.Op == cdc.OpRead {
			reads++
		}
	}
	if rest := 5000 - int(readBefore); reads > rest+100 || reads < rest-500 {
		t.Errorf("second run read %d rows; the first had delivered %d of 5000", reads, readBefore)
	}
}
