package postgres

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var dbCounter atomic.Int64

// newDB creates a fresh database on the shared cluster and returns its URL.
func newDB(t *testing.T) (*testenv.Postgres, string) {
	t.Helper()
	pg := testenv.PG(t)
	name := fmt.Sprintf("t%d_%s", dbCounter.Add(1), strings.ToLower(sanitize(t.Name())))
	if len(name) > 60 {
		name = name[:60]
	}
	if err := pg.CreateDatabase(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	// Slots are cluster-wide and hold WAL: drop the test's once its
	// sources have stopped (this cleanup runs after theirs).
	t.Cleanup(func() { dropSlots(t, pg.URL("postgres"), name) })
	return pg, pg.URL(name)
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// mustConn opens a plain connection for the test's own SQL.
func mustConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := connectNormal(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func dropSlots(t *testing.T, url, db string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Logf("dropping slots of %s: %v", db, err)
		return
	}
	defer conn.Close(ctx)
	for ctx.Err() == nil {
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, db)
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // a walsender still exiting
	}
	t.Logf("dropping slots of %s: %v", db, err)
}
