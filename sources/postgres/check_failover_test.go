package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/jackc/pgx/v5"
)

// check's failover-slot lines against a real PostgreSQL 17 primary and
// its physical standby: passing once the bridge made its slot a failover
// slot and the standby holds a synced copy, failing for each setting a
// failover needs.
func TestCheckFailoverSlots(t *testing.T) {
	primary, err := testenv.StartPostgres(testenv.PostgresOptions{Version: failoverMajor})
	if err != nil {
		testenv.Unavailable(t, "postgres 17", err)
	}
	t.Cleanup(func() { primary.Stop() })
	standby, err := primary.StartStandby(testenv.StandbyOptions{Name: "standby1",
		Settings:        map[string]string{"sync_replication_slots": "on"},
		PrimarySettings: map[string]string{"synchronized_standby_slots": "standby1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	ctx := context.Background()
	if err := primary.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	url := primary.URL("app")
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	// Replication is asynchronous here: wait for the standby to have it.
	waitFor(t, time.Minute, "the table on the standby", func() bool {
		c, err := pgx.Connect(ctx, standby.URL("app"))
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		var ok bool
		return c.QueryRow(ctx, `SELECT to_regclass('public.t') IS NOT NULL`).Scan(&ok) == nil && ok
	})
	cfg := Config{URL: url, Slot: "fo", Failover: FailoverOn, StandbyURLs: []string{standby.URL("app")}}

	// Before the bridge ran: the slot will be created as a failover slot,
	// and the standby has no copy yet.
	res := Check(ctx, cfg)
	wantCheck(t, res, "failover slot", "ok", "will be created as a failover slot")
	wantCheck(t, res, "synchronized_standby_slots", "ok", "standby1")
	wantCheck(t, res, "standby 1", "ok", "sync_replication_slots and hot_standby_feedback on")
	wantCheck(t, res, "standby 1 slot", "fail", "no copy of slot fo")

	r := startSource(t, cfg, newMemStore(), newSink(t).emit)
	r.streaming(t)
	waitFor(t, 2*time.Minute, "a synced copy of the slot on the standby", func() bool {
		mustExec(t, conn, `INSERT INTO t SELECT coalesce(max(id), 0) + 1 FROM t`)
		time.Sleep(300 * time.Millisecond)
		s, err := querySlotAt(ctx, standby.URL("app"), "fo")
		return err == nil && s.synced && !s.temporary && s.failover
	})
	if st := r.src.Status().(Status); !st.FailoverSlot || st.Timeline != 1 || !strings.HasPrefix(st.ServerVersion, "17") {
		t.Errorf("/status: failover_slot %t, timeline %d, server_version %q; want true, 1, 17.x", st.FailoverSlot, st.Timeline, st.ServerVersion)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	res = Check(ctx, cfg)
	wantCheck(t, res, "failover slot", "ok", "slot fo is a failover slot")
	wantCheck(t, res, "standby 1 slot", "ok", "synced copy of slot fo")
	for _, c := range res {
		if c.Status == "fail" {
			t.Errorf("check failed with everything set up: %+v", c)
		}
	}

	// Without a standby to look at, check says what it cannot see.
	noStandby := cfg
	noStandby.StandbyURLs = nil
	wantCheck(t, Check(ctx, noStandby), "standby", "warn", "no standby checked")

	// The primary given as a standby.
	wrong := cfg
	wrong.StandbyURLs = []string{url}
	wantCheck(t, Check(ctx, wrong), "standby 1", "fail", "not a standby")

	// The standby's settings, one by one.
	sconn, err := pgx.Connect(ctx, standby.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close(ctx)
	mustExec(t, sconn, `ALTER SYSTEM SET sync_replication_slots = off`)
	mustExec(t, sconn, `ALTER SYSTEM SET hot_standby_feedback = off`)
	mustExec(t, sconn, `SELECT pg_reload_conf()`)
	waitFor(t, 10*time.Second, "the standby's reload", func() bool {
		var v string
		_ = sconn.QueryRow(ctx, "SHOW hot_standby_feedback").Scan(&v)
		return v == "off"
	})
	res = Check(ctx, cfg)
	wantCheck(t, res, "standby 1", "fail", "sync_replication_slots is off; hot_standby_feedback is off")

	// On the primary: synchronized_standby_slots naming a slot that does
	// not exist, then empty.
	pconn := mustConn(t, primary.URL("postgres"))
	mustExec(t, pconn, `ALTER SYSTEM SET synchronized_standby_slots = 'standby1, gone'`)
	mustExec(t, pconn, `SELECT pg_reload_conf()`)
	time.Sleep(500 * time.Millisecond)
	wantCheck(t, Check(ctx, cfg), "synchronized_standby_slots", "fail", "slot gone named in synchronized_standby_slots does not exist")
	mustExec(t, pconn, `ALTER SYSTEM SET synchronized_standby_slots = ''`)
	mustExec(t, pconn, `SELECT pg_reload_conf()`)
	time.Sleep(500 * time.Millisecond)
	wantCheck(t, Check(ctx, cfg), "failover slot", "fail", "synchronized_standby_slots is empty")
	auto := cfg
	auto.Failover = FailoverAuto
	wantCheck(t, Check(ctx, auto), "failover slot", "warn", "the slot is a failover slot, but synchronized_standby_slots is empty")
}

// wantCheck fails unless res has a line name with status and detail
// containing want (the first such line when several share the name).
func wantCheck(t *testing.T, res []CheckResult, name, status, want string) {
	t.Helper()
	for _, c := range res {
		if c.Name == name && c.Status == status && strings.Contains(c.Detail, want) {
			return
		}
	}
	var lines []string
	for _, c := range res {
		lines = append(lines, c.Status+" "+c.Name+": "+c.Detail)
	}
	t.Fatalf("no %s line %q containing %q in:\n  %s", status, name, want, strings.Join(lines, "\n  "))
}

func querySlotAt(ctx context.Context, url, name string) (slotInfo, error) {
	pool, err := newPool(ctx, url)
	if err != nil {
		return slotInfo{}, err
	}
	defer pool.Close()
	return querySlot(ctx, pool, name)
}
