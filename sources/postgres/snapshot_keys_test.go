package postgres

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// keyTables are tables whose keys stress chunk boundaries: values whose
// text sorts differently from the type (negative numbers, numeric scales,
// NaN, infinities, microseconds, empty and zero bytes, enum labels out of
// alphabetical order, text where a linguistic collation differs from byte
// order), and composite keys whose index order differs from the column
// order. Every table has a column n numbering its rows 1..count.
var keyTables = []struct {
	name, ddl, fill string
}{
	{"k_int2", "k int2 PRIMARY KEY", `SELECT g::int2 FROM generate_series(-32768, 32767, 331) g UNION SELECT 32767`},
	{"k_int4", "k int4 PRIMARY KEY", `SELECT g FROM generate_series(-2147483648, 2147483647, 21474837) g UNION VALUES (0), (-1), (1), (2147483647)`},
	{"k_int8", "k int8 PRIMARY KEY", `SELECT g FROM generate_series(-9223372036854775808, 9223372036854775807, 92233720368547758) g
		UNION VALUES (9007199254740993), (9007199254740992), (-9007199254740993), (9223372036854775807)`},
	{"k_numeric", "k numeric PRIMARY KEY", `SELECT (g / 7.0)::numeric FROM generate_series(-150, 150) g
		UNION VALUES ('NaN'::numeric), (1e40), (-1e40), (0.000000000000000000001), (2.50), (12345678901234567890.123456789)`},
	{"k_uuid", "k uuid PRIMARY KEY", `SELECT gen_random_uuid() FROM generate_series(1, 200)
		UNION VALUES ('00000000-0000-0000-0000-000000000000'::uuid), ('ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)`},
	{"k_timestamptz", "k timestamptz PRIMARY KEY", `SELECT '2024-03-31 01:59:59.999999+00'::timestamptz + g * interval '1 microsecond' FROM generate_series(0, 60) g
		UNION SELECT '1999-12-31 23:00:00-05'::timestamptz + g * interval '37 minutes 13.000001 seconds' FROM generate_series(0, 120) g
		UNION VALUES ('infinity'::timestamptz), ('-infinity'::timestamptz), ('0044-03-15 12:00:00 BC'::timestamptz)`},
	{"k_bytea", "k bytea PRIMARY KEY", `VALUES (''::bytea), ('\x00'::bytea), ('\x0000'::bytea), ('\x01'::bytea), ('\xff'::bytea), ('\xff00'::bytea), ('\x5c'::bytea), ('\x2c'::bytea), ('\x22'::bytea)
		UNION SELECT decode(md5(g::text), 'hex') FROM generate_series(1, 150) g
		UNION SELECT substring(decode(md5(g::text), 'hex') FROM 1 FOR g % 5 + 1) FROM generate_series(1, 100) g`},
	{"k_enum", "k k_mood PRIMARY KEY", `SELECT unnest(enum_range(NULL::k_mood))`},
	{"k_text", "k text COLLATE k_en PRIMARY KEY", `VALUES ('a'), ('A'), ('b'), ('B'), ('é'), ('e'), ('E'), ('f'), ('a b'), ('ab'), ('a-b'), ('a_b'), ('10'), ('9'), ('Z'), ('z'),
			('ß'), ('ss'), ('æ'), ('ae'), (''), (' '), ('"'), ('\'), (','), ('{}'), ('(,)'), ('NULL'), ('null'), (repeat('x', 3000))
		UNION SELECT md5(g::text) || chr(192 + g % 60) FROM generate_series(1, 200) g`},
	{"k_two", "a int NOT NULL, b text COLLATE k_en NOT NULL, PRIMARY KEY (b, a)", `SELECT g % 4, chr(65 + g % 3) || chr(97 + g % 5) || (g % 7)::text FROM generate_series(1, 400) g GROUP BY 1, 2`},
	{"k_three", "a bytea NOT NULL, b timestamptz NOT NULL, c numeric NOT NULL, PRIMARY KEY (c, a, b)",
		`SELECT decode(lpad(to_hex(g % 3), 2, '0'), 'hex'), '2020-01-01'::timestamptz + (g % 5) * interval '1 day', (g % 2) / 3.0 FROM generate_series(1, 300) g GROUP BY 1, 2, 3`},
}

// Chunk boundaries are exact for every key type: with chunks of a few
// rows, every row of every table is read exactly once, and a table
// without a key is refused by name, not skipped.
func TestSnapshotKeyTypes(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE COLLATION k_en (provider = icu, locale = 'en-US')`)
	// Labels declared out of alphabetical order, and one added before
	// another later: enums sort by declaration, not by text.
	mustExec(t, conn, `CREATE TYPE k_mood AS ENUM ('zeta', 'alpha', 'mid', 'Beta', 'beta', 'omega', 'a b', 'a,b', '"q"')`)
	mustExec(t, conn, `ALTER TYPE k_mood ADD VALUE 'first' BEFORE 'zeta'`)
	mustExec(t, conn, `ALTER TYPE k_mood ADD VALUE 'between' AFTER 'alpha'`)
	want := map[string]int{}
	for _, kt := range keyTables {
		mustExec(t, conn, fmt.Sprintf(`CREATE TABLE %s (%s, n int NOT NULL UNIQUE)`, kt.name, kt.ddl))
		cols := "k"
		switch kt.name {
		case "k_two":
			cols = "a, b"
		case "k_three":
			cols = "a, b, c"
		}
		mustExec(t, conn, fmt.Sprintf(`INSERT INTO %s (%s, n) SELECT *, row_number() OVER () FROM (%s) s`, kt.name, cols, kt.fill))
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM "+kt.name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		want["public."+kt.name] = n
	}
	// The text keys really sort differently under k_en than byte-wise,
	// or the table would test nothing the C collation does not.
	var differs bool
	if err := conn.QueryRow(t.Context(), `SELECT array_agg(k ORDER BY k) <> array_agg(k ORDER BY k COLLATE "C") FROM k_text`).Scan(&differs); err != nil || !differs {
		t.Fatalf("k_text sorts the same under k_en and C (err %v)", err)
	}
	mustExec(t, conn, `CREATE TABLE k_none (v text); ALTER TABLE k_none REPLICA IDENTITY FULL; INSERT INTO k_none VALUES ('x'), ('y')`)

	sk := newSink(t)
	r := startSource(t, Config{URL: url, SnapshotChunkRows: 7}, newMemStore(), sk.emit)
	r.streaming(t)

	seen := map[string]map[int]int{} // table -> n -> reads
	for _, e := range sk.snapshot() {
		if e.Op != cdc.OpRead {
			t.Errorf("unexpected %s event of %s: nothing changes the tables", e.Op, e.Subject)
			continue
		}
		var row struct {
			N int `json:"n"`
		}
		if err := json.Unmarshal(e.After, &row); err != nil || row.N == 0 {
			t.Fatalf("read of %s: after %s: %v", e.Subject, e.After, err)
		}
		if seen[e.Subject] == nil {
			seen[e.Subject] = map[int]int{}
		}
		seen[e.Subject][row.N]++
	}
	for table, n := range want {
		var missing, twice []int
		for i := 1; i <= n; i++ {
			switch seen[table][i] {
			case 0:
				missing = append(missing, i)
			case 1:
			default:
				twice = append(twice, i)
			}
		}
		if len(missing) > 0 || len(twice) > 0 || len(seen[table]) != n {
			t.Errorf("%s: %d rows, %d read; not read: %v; read more than once: %v", table, n, len(seen[table]), missing, twice)
		}
	}
	if len(seen["public.k_none"]) > 0 {
		t.Errorf("k_none, which has no key, was read: %d rows", len(seen["public.k_none"]))
	}
	var states []string
	for _, j := range r.src.Status().(Status).Snapshots {
		for _, tb := range j.Tables {
			if tb.Table == "public.k_none" {
				if tb.State != tableRefused || !strings.Contains(tb.Note, "no primary key") {
					t.Errorf("k_none: state %q, note %q; want %q with the reason", tb.State, tb.Note, tableRefused)
				}
			} else if tb.State != tableDone {
				t.Errorf("%s: state %q, want %q", tb.Table, tb.State, tableDone)
			}
			states = append(states, fmt.Sprintf("%s %s (%d rows, %d chunks)", tb.Table, tb.State, tb.Rows, tb.Chunks))
		}
	}
	t.Logf("snapshot: %s", strings.Join(states, "; "))
}
