package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/chaos"
	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A slot that something else moved past what the bridge confirmed is not
// trusted: the changes in between may never have been sent. fail stops
// with the reason; continue streams from the moved slot, saying there is
// a gap.
func TestSlotMovedAhead(t *testing.T) {
	for _, mode := range []string{OnSlotLostFail, OnSlotLostContinue} {
		t.Run(mode, func(t *testing.T) {
			_, url := newDB(t)
			conn := mustConn(t, url)
			mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
			store := newMemStore()
			sk := newSink(t)
			r := startSource(t, Config{URL: url}, store, sk.emit)
			r.streaming(t)
			mustExec(t, conn, `INSERT INTO t VALUES (1)`)
			waitFor(t, 10*time.Second, "an event", func() bool { return sk.len() == 1 })
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			mustExec(t, conn, `INSERT INTO t VALUES (2)`) // skipped by the advance below
			waitFor(t, 30*time.Second, "the walsender to release the slot", func() bool {
				var active bool
				err := conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slotFor(url)).Scan(&active)
				return err == nil && !active
			})
			mustExec(t, conn, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, slotFor(url))
			mustExec(t, conn, `INSERT INTO t VALUES (3)`)

			sk2 := newSink(t)
			r2 := startSource(t, Config{URL: url, OnSlotLost: mode}, store, sk2.emit)
			if mode == OnSlotLostFail {
				select {
				case err := <-r2.done:
					close(r2.done)
					if err == nil || !strings.Contains(err.Error(), "is ahead of") || !strings.Contains(err.Error(), "CDCBRIDGE_POSTGRES_ON_SLOT_LOST") {
						t.Fatalf("Run returned %v, want an error saying the slot is ahead and naming CDCBRIDGE_POSTGRES_ON_SLOT_LOST", err)
					}
					t.Logf("error: %v", err)
				case <-time.After(30 * time.Second):
					t.Fatal("Run did not stop on a slot moved ahead")
				}
				if sk2.len() != 0 {
					t.Errorf("%d events emitted from an untrusted slot", sk2.len())
				}
			} else {
				waitFor(t, 20*time.Second, "the insert after the advance", func() bool { return sk2.len() >= 1 })
				ev := sk2.snapshot()
				if len(ev) != 1 || !strings.Contains(string(ev[0].After), `"id": 3`) && !strings.Contains(string(ev[0].After), `"id":3`) {
					t.Errorf("events after continuing: %d, first %s; want only id 3", len(ev), ev[0].After)
				}
				st := r2.src.Status().(Status)
				if !strings.Contains(strings.Join(st.Degraded, ";"), "gap") {
					t.Errorf("/status degraded %v, want the gap named", st.Degraded)
				}
			}
			if got := testutil.ToFloat64(r2.src.m.slotLost.WithLabelValues(mode)); got != 1 {
				t.Errorf("cdcbridge_postgres_slot_lost_total{action=%q} = %v, want 1", mode, got)
			}
		})
	}
}

// A slot behind the position the bridge saved, on the same timeline (a
// stop whose last status update the server never applied, a server that
// lost the slot's last position in a crash): the bridge starts where the
// store says, so nothing it delivered is sent again.
func TestSlotBehindOnSameTimeline(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	store := newMemStore()
	sk := newSink(t)
	r := startSource(t, Config{URL: url}, store, sk.emit)
	r.streaming(t)
	slot := slotFor(url)
	mustExec(t, conn, `INSERT INTO t VALUES (1)`)
	waitFor(t, 10*time.Second, "an event", func() bool { return sk.len() == 1 })
	// A copy of the slot where it stands now, and two more changes.
	mustExec(t, conn, `SELECT pg_copy_logical_replication_slot($1::name, ($1::text || '_old')::name)`, slot)
	mustExec(t, conn, `INSERT INTO t VALUES (2)`)
	mustExec(t, conn, `INSERT INTO t VALUES (3)`)
	waitFor(t, 10*time.Second, "three events", func() bool { return sk.len() == 3 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the walsender to release the slot", func() bool {
		var active bool
		err := conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		return err == nil && !active
	})
	// The slot goes back to before 2 and 3, which the store holds as sent.
	mustExec(t, conn, `SELECT pg_drop_replication_slot($1)`, slot)
	mustExec(t, conn, `SELECT pg_copy_logical_replication_slot(($1::text || '_old')::name, $1::name)`, slot)
	mustExec(t, conn, `SELECT pg_drop_replication_slot(($1::text || '_old')::name)`, slot)
	mustExec(t, conn, `INSERT INTO t VALUES (4)`)

	sk2 := newSink(t)
	r2 := startSource(t, Config{URL: url}, store, sk2.emit)
	r2.streaming(t)
	waitFor(t, 20*time.Second, "the insert after the restart", func() bool { return sk2.len() >= 1 })
	time.Sleep(500 * time.Millisecond) // anything sent again would come first
	ev := sk2.snapshot()
	if len(ev) != 1 || !strings.Contains(string(ev[0].After), `"id":4`) && !strings.Contains(string(ev[0].After), `"id": 4`) {
		var got []string
		for _, e := range ev {
			got = append(got, string(e.After))
		}
		t.Fatalf("events after the restart: %v; want only id 4 (2 and 3 were delivered before)", got)
	}
}

// Another cluster answering at the address the bridge streamed from (a
// restore from a backup, a logical copy behind the same DNS name) has
// another system identifier and none of the bridge's slots: that is not a
// first run, and with fail the bridge stops naming both systems.
func TestOtherClusterAtSameAddress(t *testing.T) {
	pgA, _ := privatePG(t, nil)
	pgB, _ := privatePG(t, nil)
	// The database's address, which the test moves as a DNS name moves.
	fw, err := chaos.NewProxy(fmt.Sprintf("127.0.0.1:%d", pgA.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	url := fmt.Sprintf("postgres://postgres@%s/app?sslmode=disable", fw.Addr)
	for _, pg := range []*testenv.Postgres{pgA, pgB} {
		conn := mustConn(t, pg.URL("app"))
		mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
		mustExec(t, conn, `INSERT INTO t VALUES (1)`)
		conn.Close(context.Background())
	}
	store := newMemStore()
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Slot: "moved"}, store, sk.emit)
	r.streaming(t)
	waitFor(t, 10*time.Second, "the snapshot row", func() bool { return sk.len() == 1 })
	sysA := r.src.Status().(Status).SystemID
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	fw.SetTarget(fmt.Sprintf("127.0.0.1:%d", pgB.Port))
	r2 := startSource(t, Config{URL: url, Slot: "moved"}, store, newSink(t).emit)
	select {
	case err := <-r2.done:
		close(r2.done)
		if err == nil || !strings.Contains(err.Error(), "system identifier") || !strings.Contains(err.Error(), sysA) {
			t.Fatalf("Run returned %v, want an error naming the other system identifier %s", err, sysA)
		}
		t.Logf("error: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop on another cluster at the same address")
	}

	// resnapshot reads the new cluster's rows from a new slot.
	sk3 := newSink(t)
	r3 := startSource(t, Config{URL: url, Slot: "moved", OnSlotLost: OnSlotLostResnapshot}, store, sk3.emit)
	r3.streaming(t)
	waitFor(t, 10*time.Second, "the new cluster's snapshot row", func() bool { return sk3.len() == 1 })
	if sysB := r3.src.Status().(Status).SystemID; sysB == sysA || !strings.Contains(sk3.snapshot()[0].Source, sysB) {
		t.Errorf("after resnapshot: system %s (was %s), event source %s", sysB, sysA, sk3.snapshot()[0].Source)
	}
}

// CDCBRIDGE_POSTGRES_FAILOVER=true on a server without failover slots is
// a configuration error, at start and in check; auto quietly uses a plain
// slot there.
func TestFailoverNeedsPostgres17(t *testing.T) {
	pg := testenv.PG(t)
	if pg.Major >= failoverMajor {
		_, url := newDB(t)
		res := Check(context.Background(), Config{URL: url, Failover: FailoverOn})
		if got := findCheck(res, "failover slot"); got == nil || got.Status != "fail" || !strings.Contains(got.Detail, "synchronized_standby_slots") {
			t.Fatalf("check on PostgreSQL %d with FAILOVER=true and no synchronized_standby_slots: %+v, want a failure naming it", pg.Major, got)
		}
		return
	}
	_, url := newDB(t)
	r := startSource(t, Config{URL: url, Failover: FailoverOn}, newMemStore(), newSink(t).emit)
	select {
	case err := <-r.done:
		close(r.done)
		if err == nil || !strings.Contains(err.Error(), "CDCBRIDGE_POSTGRES_FAILOVER=true needs failover slots") {
			t.Fatalf("Run returned %v, want the failover error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop")
	}
	res := Check(context.Background(), Config{URL: url, Failover: FailoverOn})
	if got := findCheck(res, "failover slot"); got == nil || got.Status != "fail" {
		t.Errorf("check with FAILOVER=true on PostgreSQL %d: %+v, want fail", pg.Major, got)
	}
	res = Check(context.Background(), Config{URL: url})
	if got := findCheck(res, "failover slot"); got == nil || got.Status != "ok" || !strings.Contains(got.Detail, "has no failover slots") {
		t.Errorf("check with FAILOVER=auto on PostgreSQL %d: %+v, want ok saying a failover loses the slot", pg.Major, got)
	}
}

func findCheck(res []CheckResult, name string) *CheckResult {
	for i := range res {
		if res[i].Name == name {
			return &res[i]
		}
	}
	return nil
}
