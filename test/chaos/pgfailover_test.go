package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// failoverCluster is a primary with one physical standby, both real
// servers of one major version, and a TCP forwarder that stands for the
// database's DNS name: the bridge and the workload reach the primary
// through it, and the test points it at the standby once promoted.
type failoverCluster struct {
	Primary, Standby *testenv.Postgres
	Proxy            *Proxy
}

// standbySlot is the standby's physical slot on the primary.
const standbySlot = "standby1"

func newFailoverCluster(t *testing.T, major int) *failoverCluster {
	t.Helper()
	primary, err := testenv.StartPostgres(testenv.PostgresOptions{Version: major})
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("postgres %d", major), err)
	}
	t.Cleanup(func() { primary.Stop() })
	// Synchronous replication: a commit the workload saw succeed is on the
	// standby, so the promoted standby is the truth the stream is held
	// against. synchronized_standby_slots (17+) holds the bridge's
	// walsender back until the standby has what it sends.
	primarySettings := map[string]string{"synchronous_standby_names": standbySlot}
	standbySettings := map[string]string{}
	if major >= 17 {
		primarySettings["synchronized_standby_slots"] = standbySlot
		standbySettings["sync_replication_slots"] = "on"
	}
	standby, err := primary.StartStandby(testenv.StandbyOptions{Name: standbySlot,
		Settings: standbySettings, PrimarySettings: primarySettings})
	if err != nil {
		t.Fatalf("starting the standby: %v\n--- primary log ---\n%s", err, primary.Log())
	}
	t.Cleanup(func() { standby.Stop() })
	proxy, err := NewProxy(fmt.Sprintf("127.0.0.1:%d", primary.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	return &failoverCluster{Primary: primary, Standby: standby, Proxy: proxy}
}

// URL is the database's address as clients see it.
func (c *failoverCluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", c.Proxy.Addr, db)
}

// failOver kills the primary with SIGKILL, promotes the standby and
// points the forwarder at it.
func (c *failoverCluster) failOver(t *testing.T) {
	t.Helper()
	if err := c.Primary.Shutdown("kill"); err != nil {
		t.Fatalf("killing the primary: %v", err)
	}
	logf(t, "primary killed (SIGKILL)")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.Standby.Promote(ctx); err != nil {
		t.Fatalf("%v\n%s", err, c.Standby.Log())
	}
	c.Proxy.SetTarget(fmt.Sprintf("127.0.0.1:%d", c.Standby.Port))
	logf(t, "standby promoted; the database's address now leads to it")
}

// waitCommitted waits until the workload has committed n changes: the
// middle of its burst. The failover clusters commit synchronously to the
// standby, so on a loaded machine the burst can be far slower than its
// pace.
func waitCommitted(t *testing.T, w *PGWorkload, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for w.Committed() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the workload committed %d changes in %v, want %d", w.Committed(), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSyncedSlot waits until the standby holds a persistent synchronized
// copy of slot: the slot sync worker keeps a new copy temporary until the
// slot on the primary has moved past what the standby holds, so the test
// writes to a table the bridge does not publish meanwhile (an idle slot
// moves with the server's WAL).
func (c *failoverCluster) waitSyncedSlot(t *testing.T, db, slot string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	for i := 0; ; i++ {
		pgExec(t, c.Primary.URL(db), fmt.Sprintf(`INSERT INTO wl_tx (n) VALUES (%d)`, -1-i))
		conn, err := pgx.Connect(ctx, c.Standby.URL(db))
		if err == nil {
			var synced, temporary, failover bool
			err = conn.QueryRow(ctx, `SELECT synced, temporary, failover FROM pg_replication_slots WHERE slot_name = $1`, slot).
				Scan(&synced, &temporary, &failover)
			conn.Close(context.Background())
			if err == nil && synced && !temporary && failover {
				return
			}
			last = fmt.Sprintf("synced %t, temporary %t, failover %t, err %v", synced, temporary, failover, err)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the standby has no usable copy of slot %s after %v (%s)\n--- standby log ---\n%s", slot, timeout, last, c.Standby.Log())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// TestPostgresFailover kills the primary in the middle of a burst of
// transactions and promotes its standby, on PostgreSQL 17 and 18 with a
// failover slot (CDCBRIDGE_POSTGRES_FAILOVER=true). The bridge reaches
// the database through one address, which the test moves to the promoted
// standby. It must carry on from the standby's synchronized copy of the
// slot: nothing missing, no row out of order, and the changes sent again
// (the copy lags the primary's slot) with their first ids.
func TestPostgresFailover(t *testing.T) {
	for _, major := range []int{17, 18} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			name := fmt.Sprintf("postgres %d failover", major)
			cl := newFailoverCluster(t, major)
			r := newPGRig(t, name, cl.Primary, testenv.Kinesalite(t))
			r.Work.URL = cl.URL(r.DB)
			r.Work.Changes = Pick(params, 3000, 20000)
			r.Work.TxPerSecond = Pick(params, 40.0, 60.0)
			r.Work.BigTxProb = 0.01
			r.Work.BigTxSize = [2]int{100, 400}
			env := append(r.env(cl.URL(r.DB), r.Kinesis), "CDCBRIDGE_POSTGRES_FAILOVER=true")
			slot := envValue(env, "CDCBRIDGE_POSTGRES_SLOT")
			b := NewBridge(t, env...)
			b.Start()
			waitStreaming(t, b)
			if v, err := b.Metric("cdcbridge_postgres_failover_slot"); err != nil || v != 1 {
				t.Fatalf("cdcbridge_postgres_failover_slot = %v (%v), want 1", v, err)
			}
			stopSupervising := superviseFencedExits(b)
			defer stopSupervising()

			cl.waitSyncedSlot(t, r.DB, slot, 3*time.Minute)
			logf(t, "the standby holds a synced copy of slot %s", slot)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
			waitCommitted(t, r.Work, int64(r.Work.Changes/3), 5*time.Minute)
			before := r.Work.Committed()
			cl.failOver(t)
			wait()
			logf(t, "workload done: %d changes (%d before the failover), %d transactions looked up after an unknown outcome",
				r.Work.Committed(), before, r.Work.Ambiguous())
			res := r.finish(b, Pick(params, 2*time.Minute, 5*time.Minute))
			if err := stopSupervising(); err != nil {
				t.Error(err)
			}
			st, err := b.Status()
			if err != nil {
				t.Fatal(err)
			}
			src, _ := st["source"].(map[string]any)
			if tl, _ := src["timeline"].(float64); tl < 2 {
				t.Errorf("/status source.timeline = %v after the failover, want 2 or more", src["timeline"])
			}
			if v, err := b.Metric("cdcbridge_postgres_timeline"); err != nil || v < 2 {
				t.Errorf("cdcbridge_postgres_timeline = %v (%v) after the failover, want 2 or more", v, err)
			}
			if !strings.Contains(b.AllLogs(), "the server changed timeline since the bridge last streamed") {
				t.Errorf("no log line names the failover\n%s", b.LogTail(30))
			}
			if res.Duplicates == 0 {
				logf(t, "no duplicates: the synced slot had caught up with the bridge")
			}
		})
	}
}

// TestPostgresFailoverWithoutFailoverSlot is the same failover on
// PostgreSQL 16, which has no failover slots: the promoted standby has no
// copy of the slot. With CDCBRIDGE_POSTGRES_ON_SLOT_LOST=fail the bridge
// must stop and say what happened, never stream from a new slot with a
// silent gap; restarted with resnapshot it reads every row again from a
// new slot, and the stream's last word on each row is its state in the
// database.
func TestPostgresFailoverWithoutFailoverSlot(t *testing.T) {
	const name = "postgres 16 failover, slot lost"
	t.Parallel()
	cl := newFailoverCluster(t, 16)
	r := newPGRig(t, name, cl.Primary, testenv.Kinesalite(t))
	r.Work.URL = cl.URL(r.DB)
	r.Work.Changes = Pick(params, 1500, 6000)
	r.Work.TxPerSecond = 40
	env := r.env(cl.URL(r.DB), r.Kinesis)
	b := NewBridge(t, env...)
	b.Start()
	waitStreaming(t, b)
	if v, err := b.Metric("cdcbridge_postgres_failover_slot"); err != nil || v != 0 {
		t.Fatalf("cdcbridge_postgres_failover_slot = %v (%v) on PostgreSQL 16, want 0", v, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
	waitCommitted(t, r.Work, int64(r.Work.Changes/3), 5*time.Minute)
	cl.failOver(t)

	// A leader whose lock connection broke with records in flight exits
	// first (as a supervisor would, the test restarts it); the restarted
	// bridge finds the slot missing.
	var code int
	var log string
	for attempt := 0; ; attempt++ {
		c, ok := b.WaitExit(2 * time.Minute)
		if !ok {
			t.Fatalf("the bridge still runs 2 minutes after a failover that lost its slot\n%s", b.LogTail(30))
		}
		code, log = c, b.Log()
		if attempt < 3 && code == 1 && strings.Contains(lastLogLine(log), "stuck in the sink") {
			logf(t, "fenced exit after the lost lock connection; restarting the bridge")
			b.Start()
			continue
		}
		break
	}
	if code == 0 || !contains(log, "does not exist on this server, which took over", "timeline 2", "CDCBRIDGE_POSTGRES_ON_SLOT_LOST=resnapshot") {
		t.Fatalf("exit status %d; want non-zero and an error naming the lost slot, the new timeline and the way on\n%s", code, b.LogTail(20))
	}
	logf(t, "the bridge stopped: %s", lastLogLine(log))
	wait()

	b.Start("CDCBRIDGE_POSTGRES_ON_SLOT_LOST=resnapshot")
	waitStreaming(t, b)
	// Changes after the new snapshot, on rows it read and on new ones.
	pgExec(t, r.Work.URL,
		`UPDATE items SET ver = ver + 1, pad = 'after' WHERE id IN (SELECT id FROM items ORDER BY id LIMIT 50)`,
		`DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY id DESC LIMIT 20)`,
		`INSERT INTO items (id, ver, pad) SELECT g, 1, 'after' FROM generate_series(1000000, 1000099) g`)
	checkLastWord(t, r.rig, cl.URL(r.DB), 2*time.Minute)
	if code, _ := b.Term(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit status %d\n%s", code, b.LogTail(20))
	}
	if !strings.Contains(b.AllLogs(), "creating a new slot and reading a new snapshot") {
		t.Errorf("the restarted bridge did not say it read a new snapshot\n%s", b.LogTail(30))
	}
}

// checkLastWord waits until the stream, read as DESIGN.md tells consumers
// to read a new snapshot, says what the items table holds: every row's
// last event carries its version in the database and comes from the
// newest snapshot (a read) or after it; a row gone from the database has
// a delete as its last event, or nothing since that snapshot (a row the
// new snapshot did not read again was deleted in between).
func checkLastWord(t *testing.T, r *rig, url string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id, ver FROM items`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]int64{}
	for rows.Next() {
		var id, ver int64
		if err := rows.Scan(&id, &ver); err != nil {
			t.Fatal(err)
		}
		want[id] = ver
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	type last struct {
		op    string
		ver   int64
		fresh bool // from the newest snapshot or after it
	}
	deadline := time.Now().Add(timeout)
	for {
		recs, err := r.reader.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		snapSeq := ""
		for _, rec := range recs {
			if rec.Err == nil && rec.Env.Op == "read" && rec.Env.Sequence > snapSeq {
				snapSeq = rec.Env.Sequence
			}
		}
		got := map[int64]last{}
		for _, rec := range recs {
			if rec.Err != nil {
				t.Fatalf("invalid record %s: %v", rec.Sequence, rec.Err)
			}
			var key struct {
				ID int64 `json:"id"`
			}
			var after struct {
				Ver int64 `json:"ver"`
			}
			if err := json.Unmarshal(rec.Env.Key, &key); err != nil {
				t.Fatalf("record %s: key %s: %v", rec.Env.ID, rec.Env.Key, err)
			}
			if rec.Env.After != nil {
				if err := json.Unmarshal(rec.Env.After, &after); err != nil {
					t.Fatalf("record %s: after: %v", rec.Env.ID, err)
				}
			}
			got[key.ID] = last{rec.Env.Op, after.Ver, snapSeq != "" && rec.Env.Sequence >= snapSeq}
		}
		var wrong []string
		for id, ver := range want {
			if g := got[id]; !g.fresh || g.op == "delete" || g.ver != ver {
				wrong = append(wrong, fmt.Sprintf("%d: version %d in the database, last event %s %d (since the newest snapshot: %t)", id, ver, g.op, g.ver, g.fresh))
			}
		}
		for id, g := range got {
			if _, ok := want[id]; !ok && g.fresh && g.op != "delete" {
				wrong = append(wrong, fmt.Sprintf("%d: gone from the database, last event %s since the newest snapshot", id, g.op))
			}
		}
		if len(wrong) == 0 && snapSeq != "" {
			logf(t, "the stream's last word on each of %d rows matches the database (newest snapshot at %s)", len(want), snapSeq)
			return
		}
		if time.Now().After(deadline) {
			if len(wrong) > 5 {
				wrong = wrong[:5]
			}
			t.Fatalf("after %v (newest snapshot %q): %d rows differ: %s", timeout, snapSeq, len(wrong), strings.Join(wrong, "; "))
		}
		time.Sleep(time.Second)
	}
}

func envValue(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
