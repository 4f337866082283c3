package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/google/go-cmp/cmp"
)

// brief is the part of an event the tests compare.
type brief struct {
	Op      string
	Subject string
	Key     string
	Before  string
	After   string
	PK      string
	Toast   []string
}

func briefOf(e *cdc.Event) brief {
	return brief{Op: e.Op.String(), Subject: e.Subject, Key: string(e.Key), Before: string(e.Before), After: string(e.After), PK: e.PartitionKey, Toast: e.UnchangedToast}
}

func briefs(es []*cdc.Event) []brief {
	out := make([]brief, len(es))
	for i, e := range es {
		out[i] = briefOf(e)
	}
	return out
}

func TestStreamOps(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE orders (id int PRIMARY KEY, status text, n numeric)`)
	store := newMemStore()
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, store, sk.emit)
	r.streaming(t)

	mustExec(t, conn, `INSERT INTO orders VALUES (1, 'new', 1.50)`)
	mustExec(t, conn, `BEGIN; INSERT INTO orders VALUES (2, 'new', NULL); UPDATE orders SET status = 'paid' WHERE id = 1; DELETE FROM orders WHERE id = 2; COMMIT`)
	mustExec(t, conn, `UPDATE orders SET id = 10 WHERE id = 1`)
	waitFor(t, 20*time.Second, "6 events", func() bool { return sk.len() >= 6 })

	got := sk.snapshot()
	want := []brief{
		{Op: "insert", Subject: "public.orders", Key: `{"id":1}`, After: `{"id":1,"status":"new","n":1.50}`, PK: "public.orders:[1]"},
		{Op: "insert", Subject: "public.orders", Key: `{"id":2}`, After: `{"id":2,"status":"new","n":null}`, PK: "public.orders:[2]"},
		{Op: "update", Subject: "public.orders", Key: `{"id":1}`, After: `{"id":1,"status":"paid","n":1.50}`, PK: "public.orders:[1]"},
		{Op: "delete", Subject: "public.orders", Key: `{"id":2}`, PK: "public.orders:[2]"},
		{Op: "delete", Subject: "public.orders", Key: `{"id":1}`, PK: "public.orders:[1]"},
		{Op: "insert", Subject: "public.orders", Key: `{"id":10}`, After: `{"id":10,"status":"paid","n":1.50}`, PK: "public.orders:[10]"},
	}
	if diff := cmp.Diff(want, briefs(got)); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	// Transaction shape: ordinals, last_in_tx, tx_end_lsn on the last event, ids.
	type txShape struct {
		Ordinal uint32
		Last    bool
		HasEnd  bool
		SameTx  bool
		IDIsSeq bool
	}
	var shapes []txShape
	for i, e := range got {
		shapes = append(shapes, txShape{Ordinal: e.Info.Ordinal, Last: e.Info.LastInTx, HasEnd: e.Info.TxEndLSN != "",
			SameTx: i > 0 && got[i-1].Info.CommitLSN == e.Info.CommitLSN, IDIsSeq: e.ID == e.Sequence})
		lsn, err := parseLSN(e.Info.CommitLSN)
		if err != nil {
			t.Fatal(err)
		}
		if want := cdc.ChangeID(lsn, e.Info.Ordinal); e.ID != want {
			t.Errorf("event %d id %s, want %s", i, e.ID, want)
		}
		if !strings.HasPrefix(e.Source, "/cdcbridge/postgres/") || !strings.HasSuffix(e.Source, "/"+slotFor(url)) {
			t.Errorf("source %q", e.Source)
		}
		if e.Time.IsZero() || e.Info.TxID == 0 {
			t.Errorf("event %d lacks commit time or txid", i)
		}
		if i > 0 && e.ID <= got[i-1].ID {
			t.Errorf("ids not increasing: %s after %s", e.ID, got[i-1].ID)
		}
	}
	wantShapes := []txShape{
		{1, true, true, false, true},
		{1, false, false, false, true}, {2, false, false, true, true}, {3, true, true, true, true},
		{1, false, false, false, true}, {2, true, true, true, true},
	}
	if diff := cmp.Diff(wantShapes, shapes); diff != "" {
		t.Errorf("transaction shapes (-want +got):\n%s", diff)
	}

	// The confirmed position reaches the end of the last transaction, and
	// the checkpoint store follows.
	lastEnd, _ := parseLSN(got[len(got)-1].Info.TxEndLSN)
	waitFor(t, 10*time.Second, "slot confirmed past the last transaction", func() bool {
		var confirmed string
		if err := conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slotFor(url)).Scan(&confirmed); err != nil {
			t.Fatal(err)
		}
		c, _ := parseLSN(confirmed)
		return c >= lastEnd
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run returned %v on cancel, want nil", err)
	}
	var st slotState
	cp := store.only(t)
	if err := json.Unmarshal(cp.Data, &st); err != nil {
		t.Fatal(err)
	}
	c, _ := parseLSN(st.ConfirmedLSN)
	if c < lastEnd || cp.Position != hex16(c) || !st.SnapshotComplete || st.Slot != slotFor(url) || st.SystemID == "" {
		t.Errorf("stored state %+v position %s; want confirmed >= %s", st, cp.Position, cdc.FormatLSN(lastEnd))
	}
}

func TestStatusAndHeartbeat(t *testing.T) {
	_, url := newDB(t)
	var beats atomic.Int64
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever, Heartbeat: func() { beats.Add(1) }}, newMemStore(), sk.emit)
	r.streaming(t)
	if !r.src.Ready() {
		t.Error("not ready while streaming")
	}
	n := beats.Load()
	time.Sleep(1500 * time.Millisecond) // idle: the loops still beat
	if beats.Load() <= n {
		t.Error("no heartbeat while idle")
	}
	waitFor(t, 10*time.Second, "slot lag known", func() bool { return r.src.Status().(Status).SlotLagBytes != nil })
	b, err := json.Marshal(r.src.Status())
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	mustUnmarshal(t, b, &st)
	for _, k := range []string{"role", "slot", "publications", "system_id", "confirmed_lsn", "slot_lag_bytes", "degraded"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status lacks %q: %s", k, b)
		}
	}
	if st["role"] != "active" {
		t.Errorf("role %v", st["role"])
	}
	if _, ok := r.src.OldestUnacked(); ok {
		t.Error("OldestUnacked reports a pending event while idle")
	}
}

// A sink that refuses an event for good stops the source with that error
// instead of replaying the stream into the same refusal forever.
func TestSinkRefusalIsFatal(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	refuse := func(ctx context.Context, e *cdc.Event) error {
		return errors.New("record too large and CDCBRIDGE_OVERSIZE=fail")
	}
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), refuse)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO t VALUES (1)`)
	select {
	case err := <-r.done:
		close(r.done)
		if err == nil || !strings.Contains(err.Error(), "CDCBRIDGE_OVERSIZE=fail") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop")
	}
}
