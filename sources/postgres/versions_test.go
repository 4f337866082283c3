package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// What differs among the supported versions (README, "PostgreSQL
// versions") is tested on the version the run uses
// (CDCBRIDGE_TEST_PG_VERSION; `make test-pg-matrix` runs them all): each
// test checks the behaviour of that version, and where a feature is
// missing, that the server really refuses it.

// serverVersionNum returns server_version_num (180004 for 18.4).
func serverVersionNum(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var v int
	if err := conn.QueryRow(context.Background(), "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// mustFailWith runs sql and fails the test unless the server rejects it
// with SQLSTATE code.
func mustFailWith(t *testing.T, conn *pgx.Conn, code, sql string) {
	t.Helper()
	_, err := conn.Exec(context.Background(), sql)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code {
		t.Errorf("%s: got %v, want SQLSTATE %s", sql, err, code)
	}
}

// Stored generated columns are published from PostgreSQL 18, where the
// bridge's publications ask for them: after then equals to_jsonb(row),
// from the snapshot and the stream alike. Before 18 pgoutput never sends
// them, and snapshot rows leave them out too. Virtual generated columns
// (18) are never published.
func TestGeneratedColumns(t *testing.T) {
	_, url := newDB(t)
	ctx := context.Background()
	conn := mustConn(t, url)
	version := serverVersionNum(t, conn)
	stored := version >= 180000
	mustExec(t, conn, `CREATE TABLE g (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED)`)
	// never: generated columns that must not appear in after.
	never := []string{"b"}
	if stored {
		mustExec(t, conn, `ALTER TABLE g ADD COLUMN c int GENERATED ALWAYS AS (a * 3) VIRTUAL`)
		never = []string{"c"}
	}
	mustExec(t, conn, `INSERT INTO g (id, a) VALUES (1, 1)`)

	sk := newSink(t)
	r := startSource(t, Config{URL: url}, newMemStore(), sk.emit)
	r.streaming(t)
	// Each event is compared with its row as it is when the event arrives:
	// nothing changes the row before the next step.
	compare := func(e *cdc.Event) {
		t.Helper()
		var id int
		if _, err := fmt.Sscanf(string(e.Key), `{"id":%d}`, &id); err != nil {
			t.Fatalf("key %s: %v", e.Key, err)
		}
		var equal, hasB bool
		var want string
		if err := conn.QueryRow(ctx, `SELECT $1::jsonb = to_jsonb(g) - $3::text[], $1::jsonb ? 'b', to_jsonb(g)::text FROM g WHERE id = $2`,
			string(e.After), id, never).Scan(&equal, &hasB, &want); err != nil {
			t.Fatal(err)
		}
		if !equal {
			t.Errorf("PostgreSQL %d, %s of row %d: after %s, want to_jsonb(row) %s without %v", version/10000, e.Op, id, e.After, want, never)
		}
		if hasB != stored {
			t.Errorf("PostgreSQL %d, %s of row %d: stored generated column in after: %v, want %v", version/10000, e.Op, id, hasB, stored)
		}
	}
	mustExec(t, conn, `INSERT INTO g (id, a) VALUES (2, 2)`)
	waitFor(t, 20*time.Second, "2 events", func() bool { return sk.len() >= 2 })
	for _, e := range sk.snapshot()[:2] {
		compare(e)
	}
	mustExec(t, conn, `UPDATE g SET a = 10 WHERE id = 1`)
	waitFor(t, 20*time.Second, "3 events", func() bool { return sk.len() >= 3 })
	events := sk.snapshot()
	compare(events[2])
	var ops []cdc.Op
	for _, e := range events {
		ops = append(ops, e.Op)
	}
	if fmt.Sprint(ops) != "[read insert update]" {
		t.Errorf("ops %v, want [read insert update]", ops)
	}

	// The bridge's own publications ask for stored generated columns where
	// the server has the option.
	rows, err := conn.Query(ctx, `SELECT to_jsonb(p)->>'pubgencols' FROM pg_publication p ORDER BY pubname`)
	if err != nil {
		t.Fatal(err)
	}
	gencols, err := pgx.CollectRows(rows, pgx.RowTo[*string])
	if err != nil {
		t.Fatal(err)
	}
	if len(gencols) != 2 {
		t.Fatalf("%d publications, want the bridge's 2", len(gencols))
	}
	for _, g := range gencols {
		switch {
		case stored && (g == nil || *g != "s"):
			t.Errorf("PostgreSQL %d: a publication the bridge created has pubgencols %v, want s", version/10000, g)
		case !stored && g != nil:
			t.Errorf("PostgreSQL %d: pg_publication has pubgencols (%s), new in 18", version/10000, *g)
		}
	}
	if !stored {
		// The option the bridge leaves out is really missing.
		mustFailWith(t, conn, "42601", `CREATE PUBLICATION gencols FOR TABLE g WITH (publish_generated_columns = stored)`)
	}
}

// A user's publication decides which generated columns are published: on
// 18 its column list may name a stored one, and the snapshot reads what
// the stream sends. Before 18 no column list may name one (and 14 has no
// column lists).
func TestGeneratedColumnsInColumnList(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	version := serverVersionNum(t, conn)
	mustExec(t, conn, `CREATE TABLE g (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED, c int GENERATED ALWAYS AS (a * 3) STORED);
		INSERT INTO g (id, a) VALUES (1, 1)`)
	const create = `CREATE PUBLICATION mine FOR TABLE g (id, b)`
	switch {
	case version < 150000:
		mustFailWith(t, conn, "42601", create) // no column lists before 15
		return
	case version < 180000:
		mustFailWith(t, conn, "42P10", create) // cannot use generated column in publication column list
		return
	}
	mustExec(t, conn, create)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Publication: "mine"}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO g (id, a) VALUES (2, 2)`)
	waitFor(t, 20*time.Second, "2 events", func() bool { return sk.len() >= 2 })
	want := []brief{
		{Op: "read", Subject: "public.g", Key: `{"id":1}`, After: `{"id":1,"b":2}`, PK: "public.g:[1]"},
		{Op: "insert", Subject: "public.g", Key: `{"id":2}`, After: `{"id":2,"b":4}`, PK: "public.g:[2]"},
	}
	if diff := cmp.Diff(want, briefs(sk.snapshot())); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
