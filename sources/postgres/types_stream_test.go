package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// TestRowsMatchToJSONB holds whole rows, read from the snapshot and from
// the stream, against to_jsonb(row) computed by the same server: one
// column per value case, then a row of NULLs.
func TestRowsMatchToJSONB(t *testing.T) {
	_, url := newDB(t)
	ctx := context.Background()
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TYPE mood AS ENUM ('happy', 'sad');
		CREATE DOMAIN posint AS int CHECK (VALUE > 0);
		CREATE DOMAIN shorttext AS text;
		CREATE DOMAIN intlist AS int[];
		CREATE TYPE pair AS (a int, b text);
		CREATE TYPE nested AS (p pair, l int[])`)
	var cols []string
	for i, expr := range valueCases {
		cols = append(cols, fmt.Sprintf("%s AS c%d", expr, i))
	}
	mustExec(t, conn, "CREATE TABLE types AS SELECT 1 AS id, "+strings.Join(cols, ", "))
	mustExec(t, conn, "ALTER TABLE types ADD PRIMARY KEY (id)")
	mustExec(t, conn, "INSERT INTO types SELECT 2, "+strings.Join(cols, ", "))

	sk := newSink(t)
	r := startSource(t, Config{URL: url}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, "INSERT INTO types SELECT 3, "+strings.Join(cols, ", "))
	mustExec(t, conn, "INSERT INTO types (id) VALUES (4)")
	waitFor(t, 20*time.Second, "4 events", func() bool { return sk.len() >= 4 })
	ops := map[cdc.Op]int{}
	compare := func(e *cdc.Event) {
		t.Helper()
		ops[e.Op]++
		var id int
		if _, err := fmt.Sscanf(string(e.Key), `{"id":%d}`, &id); err != nil {
			t.Fatalf("key %s: %v", e.Key, err)
		}
		var equal bool
		var want string
		if err := conn.QueryRow(ctx, "SELECT $1::jsonb = to_jsonb(t) - coalesce($3::text[], '{}'), to_jsonb(t)::text FROM types t WHERE id = $2",
			string(e.After), id, e.UnchangedToast).Scan(&equal, &want); err != nil {
			t.Fatalf("%s row %d: comparing %s: %v", e.Op, id, e.After, err)
		}
		if !equal {
			t.Errorf("%s row %d:\n got %s\nwant %s", e.Op, id, e.After, want)
		}
	}
	for _, e := range sk.snapshot() {
		compare(e)
	}
	// The wide row is stored partly out of line, so an update that leaves
	// those columns alone sends them as unchanged TOAST: the rest must match.
	mustExec(t, conn, "UPDATE types SET c0 = false WHERE id = 3")
	waitFor(t, 20*time.Second, "5 events", func() bool { return sk.len() >= 5 })
	upd := sk.snapshot()[4]
	if len(upd.UnchangedToast) == 0 {
		t.Errorf("update of the wide row: no unchanged TOAST columns reported")
	}
	compare(upd)
	if ops[cdc.OpRead] != 2 || ops[cdc.OpInsert] != 2 || ops[cdc.OpUpdate] != 1 {
		t.Errorf("ops %v, want 2 read, 2 insert, 1 update", ops)
	}
}
