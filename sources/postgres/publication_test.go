package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

func publicationTables(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT pubname || ':' || tablename FROM pg_publication_tables ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitForPublished(t *testing.T, conn *pgx.Conn, entry string) {
	t.Helper()
	waitFor(t, 20*time.Second, "publication entry "+entry, func() bool {
		for _, e := range publicationTables(t, conn) {
			if e == entry {
				return true
			}
		}
		return false
	})
}

// A publication that exists is used as it is: no companion, no sync.
func TestExistingPublicationUsedAsIs(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
		CREATE PUBLICATION mine FOR TABLE a`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Publication: "mine", Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `CREATE TABLE c (id int PRIMARY KEY); INSERT INTO b VALUES (1); INSERT INTO a VALUES (1); INSERT INTO c VALUES (1)`)
	waitFor(t, 10*time.Second, "an event", func() bool { return sk.len() >= 1 })
	time.Sleep(600 * time.Millisecond) // several sync intervals
	mustExec(t, conn, `INSERT INTO c VALUES (2); INSERT INTO a VALUES (2)`)
	waitFor(t, 10*time.Second, "two events", func() bool { return sk.len() >= 2 })
	var got []string
	for _, e := range sk.snapshot() {
		got = append(got, e.Subject+string(e.Key))
	}
	if diff := cmp.Diff([]string{`public.a{"id":1}`, `public.a{"id":2}`}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"mine:a"}, publicationTables(t, conn)); diff != "" {
		t.Errorf("publications changed (-want +got):\n%s", diff)
	}
	if got := r.src.Status().(Status).Publications; !cmp.Equal(got, []string{"mine"}) {
		t.Errorf("status publications %v", got)
	}
}

// With every table chosen and a superuser, the insert-only companion is
// FOR ALL TABLES: a new table's first inserts are captured before the
// sync adds it to the main publication; after that its updates are too.
// A table whose key appears later moves to the main publication.
func TestPublicationCoversNewTables(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE old (id int PRIMARY KEY)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever, PublicationSyncInterval: time.Hour}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `CREATE TABLE fresh (id int PRIMARY KEY, v int); INSERT INTO fresh VALUES (1, 0)`)
	mustExec(t, conn, `CREATE TABLE keyless (id int, v int); INSERT INTO keyless VALUES (1, 0)`)
	waitFor(t, 10*time.Second, "the new tables' first inserts", func() bool { return sk.len() >= 2 })

	// What the periodic sync does.
	pool, err := newPool(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := r.src.syncOnce(context.Background(), pool, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	slot := slotFor(url)
	_ = slot
	mustExec(t, conn, `UPDATE fresh SET v = 1; UPDATE keyless SET v = 1`) // keyless: must not fail
	mustExec(t, conn, `ALTER TABLE keyless ADD PRIMARY KEY (id)`)
	if err := r.src.syncOnce(context.Background(), pool, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, `UPDATE keyless SET v = 2`)
	waitFor(t, 10*time.Second, "4 events", func() bool { return sk.len() >= 4 })
	var got []string
	for _, e := range sk.snapshot() {
		got = append(got, fmt.Sprintf("%s %s %s", e.Op, e.Subject, e.After))
	}
	want := []string{
		`insert public.fresh {"id":1,"v":0}`,
		`insert public.keyless {"id":1,"v":0}`,
		`update public.fresh {"id":1,"v":1}`,
		`update public.keyless {"id":1,"v":2}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	pubs := strings.Join(publicationTables(t, conn), " ")
	for _, want := range []string{"cdcbridge:fresh", "cdcbridge:keyless", "cdcbridge:old"} {
		if !strings.Contains(pubs, want) {
			t.Errorf("publication tables %s lack %s", pubs, want)
		}
	}
}

// Without superuser: the companion is FOR TABLE too and the sync adds new
// tables to the right publication; creating the publication over tables
// the role does not own fails with an error that names the privilege.
func TestPublicationNonSuperuser(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	role := "u_" + slotFor(url)
	mustExec(t, conn, fmt.Sprintf(`CREATE ROLE %s LOGIN REPLICATION; GRANT CREATE ON DATABASE %s TO %[1]s; GRANT CREATE, USAGE ON SCHEMA public TO %[1]s`,
		role, slotFor(url)))
	t.Cleanup(func() {
		c, err := connectNormal(context.Background(), url)
		if err == nil {
			_, _ = c.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %s; DROP ROLE %[1]s", role))
			c.Close(context.Background())
		}
	})
	mustExec(t, conn, `CREATE TABLE theirs (id int PRIMARY KEY)`)
	roleURL := strings.Replace(url, "postgres@", role+"@", 1)

	// Tables it does not own: a fatal error naming ownership.
	r := startSource(t, Config{URL: roleURL, Snapshot: SnapshotNever}, newMemStore(), newSink(t).emit)
	select {
	case err := <-r.done:
		close(r.done)
		if err == nil || !strings.Contains(err.Error(), "ownership") || !strings.Contains(err.Error(), "public.theirs") {
			t.Fatalf("Run returned %v, want an error naming table ownership", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not fail")
	}

	mustExec(t, conn, fmt.Sprintf(`ALTER TABLE theirs OWNER TO %s`, role))
	sk := newSink(t)
	r2 := startSource(t, Config{URL: roleURL, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r2.streaming(t)
	rc := mustConn(t, roleURL)
	mustExec(t, rc, `CREATE TABLE mine (id int PRIMARY KEY, v int); CREATE TABLE nokey (v int)`)
	waitForPublished(t, conn, "cdcbridge:mine")
	waitForPublished(t, conn, "cdcbridge_insert_only:nokey")
	mustExec(t, rc, `INSERT INTO mine VALUES (1, 0); UPDATE mine SET v = 1; INSERT INTO nokey VALUES (1); UPDATE nokey SET v = 2; DELETE FROM nokey`)
	waitFor(t, 10*time.Second, "3 events", func() bool { return sk.len() >= 3 })
	var got []string
	for _, e := range sk.snapshot() {
		got = append(got, fmt.Sprintf("%s %s", e.Op, e.Subject))
	}
	if diff := cmp.Diff([]string{"insert public.mine", "update public.mine", "insert public.nokey"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// CDCBRIDGE_POSTGRES_TABLES: only those tables, and a listed table
// created later joins once it exists.
func TestPublicationTableList(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE SCHEMA app; CREATE TABLE app.a (id int PRIMARY KEY); CREATE TABLE app.b (id int PRIMARY KEY)`)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever, Tables: []string{"app.a", "app.later"}}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `CREATE TABLE app.later (id int PRIMARY KEY)`)
	waitForPublished(t, conn, "cdcbridge:later")
	mustExec(t, conn, `INSERT INTO app.b VALUES (1); INSERT INTO app.a VALUES (1); INSERT INTO app.later VALUES (1)`)
	waitFor(t, 10*time.Second, "2 events", func() bool { return sk.len() >= 2 })
	time.Sleep(300 * time.Millisecond)
	var got []string
	for _, e := range sk.snapshot() {
		got = append(got, e.Subject)
	}
	if diff := cmp.Diff([]string{"app.a", "app.later"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestCheck(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE nokey (v int)`)
	role := "c_" + slotFor(url)
	mustExec(t, conn, fmt.Sprintf(`CREATE ROLE %s LOGIN`, role))
	t.Cleanup(func() {
		c, err := connectNormal(context.Background(), url)
		if err == nil {
			_, _ = c.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %s; DROP ROLE %[1]s", role))
			c.Close(context.Background())
		}
	})
	byName := func(rs []CheckResult) map[string]CheckResult {
		m := map[string]CheckResult{}
		for _, r := range rs {
			m[r.Name] = r
		}
		return m
	}
	ok := byName(Check(context.Background(), Config{URL: url, Slot: slotFor(url)}))
	for _, name := range []string{"connection", "postgres version", "wal_level", "replication privilege", "replication connection", "slot", "publication"} {
		if ok[name].Status != "ok" {
			t.Errorf("superuser check %q: %+v", name, ok[name])
		}
	}
	if ok["replica identity"].Status != "warn" || !strings.Contains(ok["replica identity"].Detail, "public.nokey") {
		t.Errorf("replica identity check: %+v", ok["replica identity"])
	}
	bad := byName(Check(context.Background(), Config{URL: strings.Replace(url, "postgres@", role+"@", 1), Slot: slotFor(url)}))
	if r := bad["replication privilege"]; r.Status != "fail" || !strings.Contains(r.Fix, "REPLICATION") {
		t.Errorf("replication privilege check for a plain role: %+v", r)
	}
	if r := bad["publication"]; r.Status != "fail" {
		t.Errorf("publication check for a plain role: %+v", r)
	}
	if r := byName(Check(context.Background(), Config{URL: "postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"}))["connection"]; r.Status != "fail" {
		t.Errorf("connection check against nothing: %+v", r)
	}
}

// A user's publication with a column list and a row filter (PostgreSQL
// 15): the snapshot reads what the stream would publish.
func TestPublicationFiltersInSnapshot(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE f (id int PRIMARY KEY, v int, secret text);
		INSERT INTO f VALUES (1, 0, 's1'), (2, 5, 's2')`)
	const create = `CREATE PUBLICATION filt FOR TABLE f (id, v) WHERE (v > 0)`
	if v := serverVersionNum(t, conn); v < 150000 {
		// Nothing to honour before 15: the server refuses both.
		mustFailWith(t, conn, "42601", create)
		mustFailWith(t, conn, "42601", `CREATE PUBLICATION filt FOR TABLE f WHERE (v > 0)`)
		return
	}
	mustExec(t, conn, create)
	sk := newSink(t)
	r := startSource(t, Config{URL: url, Publication: "filt"}, newMemStore(), sk.emit)
	r.streaming(t)
	mustExec(t, conn, `INSERT INTO f VALUES (3, 0, 's3'), (4, 7, 's4')`)
	waitFor(t, 10*time.Second, "2 events", func() bool { return sk.len() >= 2 })
	time.Sleep(200 * time.Millisecond)
	want := []brief{
		{Op: "read", Subject: "public.f", Key: `{"id":2}`, After: `{"id":2,"v":5}`, PK: "public.f:[2]"},
		{Op: "insert", Subject: "public.f", Key: `{"id":4}`, After: `{"id":4,"v":7}`, PK: "public.f:[4]"},
	}
	if diff := cmp.Diff(want, briefs(sk.snapshot())); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
