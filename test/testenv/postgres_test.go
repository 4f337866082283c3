package testenv_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func connect(ctx context.Context, t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestPostgresLogicalDecoding checks that the shared cluster decodes
// changes through a pgoutput slot, which is what the Postgres source needs.
func TestPostgresLogicalDecoding(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := testenv.PG(t)
	db, slot := testenv.UniqueName("decoding"), testenv.UniqueName("slot")
	if err := pg.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	conn := connect(ctx, t, pg.URL(db))

	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		t.Fatal(err)
	}
	if walLevel != "logical" {
		t.Fatalf("wal_level = %q, want logical", walLevel)
	}
	for _, sql := range []string{
		"CREATE TABLE orders (id int PRIMARY KEY, status text)",
		"CREATE PUBLICATION testenv FOR TABLE orders",
		"SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')",
		"INSERT INTO orders VALUES (42, 'new')",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// A slot holds WAL for the whole cluster, which other tests share.
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", slot)
	})

	var plugin, database string
	if err := conn.QueryRow(ctx,
		"SELECT plugin, database FROM pg_replication_slots WHERE slot_name = $1", slot,
	).Scan(&plugin, &database); err != nil {
		t.Fatalf("reading the slot: %v", err)
	}
	if plugin != "pgoutput" || database != db {
		t.Errorf("slot plugin, database = %q, %q; want pgoutput, %s", plugin, database, db)
	}
	// pgoutput messages start with a type byte: B(egin), R(elation),
	// I(nsert), C(ommit).
	rows, err := conn.Query(ctx, `SELECT substr(data, 1, 1) FROM pg_logical_slot_peek_binary_changes(
		$1, NULL, NULL, 'proto_version', '1', 'publication_names', 'testenv')`, slot)
	if err != nil {
		t.Fatal(err)
	}
	var kinds string
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		kinds += string(b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if kinds != "BRIC" {
		t.Errorf("decoded message types = %q, want BRIC", kinds)
	}
}

// TestPostgresRestart checks extra settings, and that data survives
// every restart mode on the same port.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := testenv.StartPostgres(testenv.PostgresOptions{Settings: map[string]string{"max_connections": "33"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })

	conn := connect(ctx, t, pg.URL("postgres"))
	var maxConn string
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&maxConn); err != nil {
		t.Fatal(err)
	}
	if maxConn != "33" {
		t.Errorf("max_connections = %s, want 33 (from Settings)", maxConn)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	port := pg.Port
	// kill twice: a backend left running by the first would keep the
	// second start from the shared memory (it did, once).
	for i, mode := range []string{"immediate", "fast", "kill", "kill"} {
		if err := pg.Restart(mode); err != nil {
			t.Fatalf("Restart(%q): %v", mode, err)
		}
		if pg.Port != port {
			t.Fatalf("port changed from %d to %d", port, pg.Port)
		}
		conn := connect(ctx, t, pg.URL("postgres"))
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatalf("after Restart(%q): %v", mode, err)
		}
		if n != i+1 {
			t.Fatalf("after Restart(%q): %d rows, want %d", mode, n, i+1)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			t.Fatal(err)
		}
	}
	if err := pg.Restart("sometimes"); err == nil {
		t.Error("Restart with an unknown mode succeeded")
	}

	if err := pg.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(pg.Dir); !os.IsNotExist(err) {
		t.Errorf("Dir %s still there after Stop (stat: %v)", pg.Dir, err)
	}
}
