package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/google/go-cmp/cmp"
)

// bigValue is SQL for a value too large and too random to stay inline:
// PostgreSQL stores it out of line (TOAST).
const bigValue = `(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400))`

func TestUnchangedToast(t *testing.T) {
	_, url := newDB(t)
	ctx := context.Background()
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE dflt (id int PRIMARY KEY, n int, big text);
		CREATE TABLE full_id (id int PRIMARY KEY, n int, big text);
		ALTER TABLE full_id REPLICA IDENTITY FULL`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO dflt VALUES (1, 1, `+bigValue+`); INSERT INTO full_id VALUES (1, 1, `+bigValue+`)`)
	mustExec(t, conn, `UPDATE dflt SET n = 2; UPDATE full_id SET n = 2`)
	mustExec(t, conn, `DELETE FROM dflt; DELETE FROM full_id`)
	waitFor(t, 20*time.Second, "6 events", func() bool { return sk.len() >= 6 })
	var bigD, bigF string
	ev := sk.snapshot()
	// Values of big from the inserts.
	for _, e := range ev[:2] {
		var v struct{ Big string }
		mustUnmarshal(t, e.After, &v)
		if len(v.Big) != 400*32 {
			t.Fatalf("%s insert: big has %d characters", e.Subject, len(v.Big))
		}
		if e.Subject == "public.dflt" {
			bigD = v.Big
		} else {
			bigF = v.Big
		}
	}
	got := briefs(ev[2:])
	want := []brief{
		// DEFAULT identity: no old row, and the unchanged TOAST value is
		// named instead of being written as something it is not.
		{Op: "update", Subject: "public.dflt", Key: `{"id":1}`, After: `{"id":1,"n":2}`, PK: "public.dflt:[1]", Toast: []string{"big"}},
		// FULL identity: the complete old row supplies it.
		{Op: "update", Subject: "public.full_id", Key: `{"id":1}`, Before: `{"id":1,"n":1,"big":"` + bigF + `"}`,
			After: `{"id":1,"n":2,"big":"` + bigF + `"}`, PK: "public.full_id:[1]"},
		{Op: "delete", Subject: "public.dflt", Key: `{"id":1}`, PK: "public.dflt:[1]"},
		{Op: "delete", Subject: "public.full_id", Key: `{"id":1}`, Before: `{"id":1,"n":2,"big":"` + bigF + `"}`, PK: "public.full_id:[1]"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	_ = bigD
	_ = ctx
}

func TestSchemaChangeMidStream(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE s (id int PRIMARY KEY, a int, b text)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO s VALUES (1, 1, 'x')`)
	mustExec(t, conn, `ALTER TABLE s ADD COLUMN c jsonb DEFAULT '{"k": 1}'`)
	mustExec(t, conn, `INSERT INTO s VALUES (2, 2, 'y')`)
	mustExec(t, conn, `ALTER TABLE s DROP COLUMN b`)
	mustExec(t, conn, `INSERT INTO s VALUES (3, 3)`)
	mustExec(t, conn, `ALTER TABLE s ALTER COLUMN a TYPE text USING a::text || '!'`)
	mustExec(t, conn, `INSERT INTO s VALUES (4, 'four')`)
	// In one transaction: a change before and after the schema change.
	mustExec(t, conn, `BEGIN; INSERT INTO s VALUES (5, 'five'); ALTER TABLE s ADD COLUMN d bool; INSERT INTO s VALUES (6, 'six', NULL, true); COMMIT`)
	waitFor(t, 20*time.Second, "6 inserts", func() bool { return sk.len() >= 6 })
	var got []string
	for _, e := range sk.snapshot() {
		got = append(got, string(e.After))
	}
	want := []string{
		`{"id":1,"a":1,"b":"x"}`,
		`{"id":2,"a":2,"b":"y","c":{"k": 1}}`,
		`{"id":3,"a":3,"c":{"k": 1}}`,
		`{"id":4,"a":"four","c":{"k": 1}}`,
		`{"id":5,"a":"five","c":{"k": 1}}`,
		`{"id":6,"a":"six","c":null,"d":true}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestTruncateAndMessages(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `BEGIN; INSERT INTO a VALUES (1);
		SELECT pg_logical_emit_message(true, 'app', '{"step": 1}');
		SELECT pg_logical_emit_message(false, 'audit', 'plain text');
		INSERT INTO b VALUES (1);
		COMMIT`)
	mustExec(t, conn, `TRUNCATE a, b`)
	mustExec(t, conn, `SELECT pg_logical_emit_message(false, 'bin', '\xff00'::bytea)`)
	waitFor(t, 20*time.Second, "7 events", func() bool { return sk.len() >= 7 })
	ev := sk.snapshot()
	type row struct {
		Op, Subject, PK, Content string
		Transactional, Last      bool
		Ordinal                  uint32
		NonTxID                  bool
	}
	var got []row
	for _, e := range ev {
		r := row{Op: e.Op.String(), Subject: e.Subject, PK: e.PartitionKey, Last: e.Info.LastInTx, Ordinal: e.Info.Ordinal}
		if e.Message != nil {
			r.Content, r.Transactional = string(e.Message.Content), e.Message.Transactional
			r.NonTxID = e.ID == cdc.MessageID(mustLSN(t, e.Info.LSN)) && e.Info.CommitLSN == ""
		}
		got = append(got, r)
	}
	want := []row{
		// The non-transactional message is decoded when written, before
		// the transaction around it commits, and carries its own id.
		{Op: "message", Subject: "audit", PK: `pg_logical_emit_message:["audit"]`, Content: "plain text", NonTxID: true},
		{Op: "insert", Subject: "public.a", PK: "public.a:[1]", Ordinal: 1},
		{Op: "message", Subject: "app", PK: `pg_logical_emit_message:["app"]`, Content: `{"step": 1}`, Transactional: true, Ordinal: 2},
		{Op: "insert", Subject: "public.b", PK: "public.b:[1]", Ordinal: 3, Last: true},
		{Op: "truncate", Subject: "public.a", PK: "public.a:*", Ordinal: 1},
		{Op: "truncate", Subject: "public.b", PK: "public.b:*", Ordinal: 2, Last: true},
		{Op: "message", Subject: "bin", PK: `pg_logical_emit_message:["bin"]`, Content: "\xff\x00", NonTxID: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Binary content survives the envelope (base64).
	env, err := cdc.Encode(ev[6])
	if err != nil {
		t.Fatal(err)
	}
	back, err := cdc.Decode(env)
	if err != nil || string(back.Message.Content) != "\xff\x00" || !strings.Contains(string(env), `"content_encoding":"base64"`) {
		t.Errorf("binary message round trip: %s, %v", env, err)
	}
}

// Tables without a primary key: with REPLICA IDENTITY FULL they are
// ordered per table with complete old rows; without any replica identity
// they are published for inserts only, and the user's updates and deletes
// keep working.
func TestTablesWithoutKey(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE logs (msg text, n int); ALTER TABLE logs REPLICA IDENTITY FULL;
		CREATE TABLE loose (msg text, n int)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO logs VALUES ('a', 1); UPDATE logs SET n = 2; DELETE FROM logs`)
	mustExec(t, conn, `INSERT INTO loose VALUES ('a', 1)`)
	// These fail if loose is in a publication that publishes updates.
	mustExec(t, conn, `UPDATE loose SET n = 2; DELETE FROM loose`)
	mustExec(t, conn, `INSERT INTO loose VALUES ('b', 3)`)
	waitFor(t, 20*time.Second, "5 events", func() bool { return sk.len() >= 5 })
	want := []brief{
		{Op: "insert", Subject: "public.logs", After: `{"msg":"a","n":1}`, PK: "public.logs:*"},
		{Op: "update", Subject: "public.logs", Before: `{"msg":"a","n":1}`, After: `{"msg":"a","n":2}`, PK: "public.logs:*"},
		{Op: "delete", Subject: "public.logs", Before: `{"msg":"a","n":2}`, PK: "public.logs:*"},
		{Op: "insert", Subject: "public.loose", After: `{"msg":"a","n":1}`, PK: "public.loose:*"},
		{Op: "insert", Subject: "public.loose", After: `{"msg":"b","n":3}`, PK: "public.loose:*"},
	}
	if diff := cmp.Diff(want, briefs(sk.snapshot())); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	var mainPub, insertOnly []string
	rows, _ := conn.Query(context.Background(), `SELECT pubname, tablename FROM pg_publication_tables ORDER BY 1, 2`)
	for rows.Next() {
		var p, tb string
		_ = rows.Scan(&p, &tb)
		if p == "cdcbridge" {
			mainPub = append(mainPub, tb)
		} else {
			insertOnly = append(insertOnly, p+":"+tb)
		}
	}
	if diff := cmp.Diff([]string{"logs"}, mainPub); diff != "" {
		t.Errorf("main publication (-want +got):\n%s", diff)
	}
	if !strings.Contains(strings.Join(insertOnly, ","), "cdcbridge_insert_only:loose") {
		t.Errorf("insert-only publication: %v", insertOnly)
	}
}

// Partitioned tables are published through their root: snapshot rows and
// changes of every partition carry the root's name and key.
func TestPartitionedTable(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE ev (id int, region text, v int, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
		CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu');
		CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us');
		INSERT INTO ev VALUES (1, 'eu', 0), (2, 'us', 0)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO ev VALUES (3, 'us', 0); UPDATE ev SET v = 1 WHERE id = 1`)
	waitFor(t, 10*time.Second, "4 events", func() bool { return sk.len() >= 4 })
	want := []brief{
		{Op: "read", Subject: "public.ev", Key: `{"region":"eu","id":1}`, After: `{"id":1,"region":"eu","v":0}`, PK: `public.ev:["eu",1]`},
		{Op: "read", Subject: "public.ev", Key: `{"region":"us","id":2}`, After: `{"id":2,"region":"us","v":0}`, PK: `public.ev:["us",2]`},
		{Op: "insert", Subject: "public.ev", Key: `{"region":"us","id":3}`, After: `{"id":3,"region":"us","v":0}`, PK: `public.ev:["us",3]`},
		{Op: "update", Subject: "public.ev", Key: `{"region":"eu","id":1}`, After: `{"id":1,"region":"eu","v":1}`, PK: `public.ev:["eu",1]`},
	}
	if diff := cmp.Diff(want, briefs(sk.snapshot())); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
