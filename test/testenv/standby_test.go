package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A standby follows its primary, and once the primary is killed and the
// standby promoted, it holds every committed row and accepts writes.
func TestStandby(t *testing.T) {
	ctx := context.Background()
	pg, err := StartPostgres(PostgresOptions{})
	if err != nil {
		Unavailable(t, "postgres", err)
	}
	t.Cleanup(func() { pg.Stop() })
	sb, err := pg.StartStandby(StandbyOptions{PrimarySettings: map[string]string{"synchronous_standby_names": "standby1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop() })
	if err := pg.exec(ctx, `CREATE TABLE t (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	// Synchronous: once the insert returns, the standby has it.
	if err := pg.exec(ctx, `INSERT INTO t SELECT generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	var inRecovery bool
	if err := sb.queryRow(ctx, `SELECT pg_is_in_recovery()`, nil, &inRecovery); err != nil || !inRecovery {
		t.Fatalf("standby in recovery: %t, %v", inRecovery, err)
	}
	if err := pg.Shutdown("kill"); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := sb.Promote(pctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, sb.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 100 {
		t.Fatalf("rows on the promoted standby: %d, %v; want 100", n, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO t VALUES (101)`); err != nil {
		t.Fatalf("writing to the promoted standby: %v", err)
	}
	if sb.Major != pg.Major {
		t.Errorf("standby major %d, primary %d", sb.Major, pg.Major)
	}
}
