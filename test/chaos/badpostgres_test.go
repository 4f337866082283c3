package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

func privatePostgres(t *testing.T, settings map[string]string) *testenv.Postgres {
	t.Helper()
	pg, err := testenv.StartPostgres(testenv.PostgresOptions{Settings: settings})
	if err != nil {
		testenv.Unavailable(t, "postgres", err)
	}
	t.Cleanup(func() { pg.Stop() })
	return pg
}

func pgExec(t *testing.T, url string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// TestBadPostgres gives the bridge Postgres settings that cannot work:
// each must stop it with a message that names the cause (and never
// prints the password), except an unreachable server, which it waits
// for, saying so, without becoming ready.
func TestBadPostgres(t *testing.T) {
	t.Parallel()
	pg := privatePostgres(t, nil)
	kin := testenv.Kinesalite(t)
	kinURL := shield(t, kin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := testenv.UniqueName("badpg")
	if err := kin.CreateStream(ctx, stream, 1); err != nil {
		t.Fatal(err)
	}
	if err := pg.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	pgExec(t, pg.URL("app"),
		`CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD 'right-password'`,
		`CREATE ROLE norepl LOGIN`,
		`CREATE TABLE items (id int PRIMARY KEY, v int)`)
	// Password authentication for pwuser, trust for everyone else.
	hba := "local all all trust\n" +
		"host all pwuser 127.0.0.1/32 scram-sha-256\n" +
		"host replication pwuser 127.0.0.1/32 scram-sha-256\n" +
		"host all all 127.0.0.1/32 trust\n" +
		"host replication all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(pg.Dir, "data", "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	pgExec(t, pg.URL("app"), `SELECT pg_reload_conf()`)
	replica := privatePostgres(t, map[string]string{"wal_level": "replica"})
	if err := replica.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}

	url := func(user, pw string, port int, db string) string {
		if pw != "" {
			user += ":" + pw
		}
		return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=5", user, port, db)
	}
	for _, c := range []struct {
		name, url, tables string
		words             []string // the message must name these
	}{
		{"wrong password", url("pwuser", "wrong-password", pg.Port, "app"), "", []string{"password"}},
		{"missing database", url("postgres", "", pg.Port, "nosuchdb"), "", []string{"nosuchdb", "does not exist"}},
		{"no replication privilege", url("norepl", "", pg.Port, "app"), "", []string{"replication"}},
		{"wal_level=replica", url("postgres", "", replica.Port, "app"), "", []string{"wal_level"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			slot := testenv.UniqueName("badpg")
			env := append(BaseEnv(), "CDCBRIDGE_HTTP_ADDR=127.0.0.1:0", "CDCBRIDGE_SOURCE=postgres", "CDCBRIDGE_KINESIS_STREAM="+stream,
				"AWS_ENDPOINT_URL_KINESIS="+kinURL, "CDCBRIDGE_POSTGRES_URL="+c.url,
				"CDCBRIDGE_POSTGRES_SLOT="+slot, "CDCBRIDGE_POSTGRES_PUBLICATION="+slot,
				"CDCBRIDGE_CHECKPOINT_STORE=file://"+filepath.Join(t.TempDir(), "cp.json"),
				"CDCBRIDGE_DLQ_DIR="+filepath.Join(t.TempDir(), "dlq"))
			if c.tables != "" {
				env = append(env, "CDCBRIDGE_POSTGRES_TABLES="+c.tables)
			}
			code, out := runOnce(t, 90*time.Second, env)
			switch {
			case code == -1:
				t.Errorf("still running after 90s; want it to stop with an error:\n%s", tail(out, 15))
			case code == 0:
				t.Errorf("exit 0; want an error:\n%s", tail(out, 15))
			case !contains(strings.ToLower(out), c.words...):
				t.Errorf("exit %d, but the output does not name %q:\n%s", code, c.words, tail(out, 15))
			}
			if strings.Contains(out, "wrong-password") || strings.Contains(out, "right-password") {
				t.Errorf("the output shows a password:\n%s", out)
			}
			t.Logf("exit %d: %s", code, lastLine(out))
		})
	}

	// A listed table that does not exist yet is a warning, not an error
	// (migrations may create it later): it joins the publication once it
	// exists, and from then on nothing of it is lost.
	t.Run("publication of a missing table", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		slot := testenv.UniqueName("badpg")
		b := NewBridge(t, "CDCBRIDGE_SOURCE=postgres", "CDCBRIDGE_KINESIS_STREAM="+stream, "AWS_ENDPOINT_URL_KINESIS="+kinURL,
			"CDCBRIDGE_POSTGRES_URL="+url("postgres", "", pg.Port, "app"),
			"CDCBRIDGE_POSTGRES_SLOT="+slot, "CDCBRIDGE_POSTGRES_PUBLICATION="+slot,
			"CDCBRIDGE_POSTGRES_TABLES=public.items,public.latecomer",
			"CDCBRIDGE_CHECKPOINT_STORE=file://"+filepath.Join(t.TempDir(), "cp.json"),
			"CDCBRIDGE_DLQ_DIR="+filepath.Join(t.TempDir(), "dlq"))
		b.Start()
		waitStreaming(t, b)
		if log := b.Log(); !contains(log, "WARN", "public.latecomer") {
			t.Errorf("no warning names the missing table:\n%s", b.LogTail(10))
		}
		pgExec(t, pg.URL("app"), `CREATE TABLE latecomer (id int PRIMARY KEY, v int)`)
		deadline := time.Now().Add(60 * time.Second)
		for {
			var n int
			conn, err := pgx.Connect(ctx, pg.URL("app"))
			if err != nil {
				t.Fatal(err)
			}
			err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'latecomer'`, slot).Scan(&n)
			conn.Close(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the new table did not join publication %s within 60s\n%s", slot, b.LogTail(10))
			}
			time.Sleep(200 * time.Millisecond)
		}
		pgExec(t, pg.URL("app"), `INSERT INTO latecomer SELECT g, 0 FROM generate_series(1, 100) g`,
			`UPDATE latecomer SET v = 1 WHERE id <= 50`, `DELETE FROM latecomer WHERE id > 90`)
		want := 100 + 50 + 10
		var got int
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			recs, err := verify.ReadAll(ctx, kin.Client(), stream)
			if err != nil {
				t.Fatal(err)
			}
			ids := map[string]bool{}
			for _, r := range recs {
				if r.Env != nil && r.Env.Subject == "public.latecomer" && strings.Contains(r.Env.Source, slot) {
					ids[r.Env.ID] = true
				}
			}
			if got = len(ids); got >= want {
				break
			}
		}
		if got != want {
			t.Errorf("%d changes of the new table on the stream, want %d", got, want)
		}
	})

	t.Run("unreachable server", func(t *testing.T) {
		t.Parallel()
		slot := testenv.UniqueName("badpg")
		b := NewBridge(t, "CDCBRIDGE_SOURCE=postgres", "CDCBRIDGE_KINESIS_STREAM="+stream, "AWS_ENDPOINT_URL_KINESIS="+kinURL,
			"CDCBRIDGE_POSTGRES_URL="+url("postgres", "secret-pw", 1, "app"),
			"CDCBRIDGE_POSTGRES_SLOT="+slot, "CDCBRIDGE_POSTGRES_PUBLICATION="+slot,
			"CDCBRIDGE_CHECKPOINT_STORE=file://"+filepath.Join(t.TempDir(), "cp.json"),
			"CDCBRIDGE_DLQ_DIR="+filepath.Join(t.TempDir(), "dlq"))
		b.Start()
		deadline := time.Now().Add(8 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-b.Exited():
				t.Fatalf("exited (code %d); an unreachable server may come back, so the bridge should wait:\n%s", b.ExitCode(), b.LogTail(15))
			case <-time.After(250 * time.Millisecond):
			}
			if code, _, err := b.get("/readyz"); err == nil && code == 200 {
				t.Fatalf("ready although the database is unreachable")
			}
		}
		if log := b.Log(); !contains(log, "127.0.0.1:1", "connection refused") || strings.Contains(log, "secret-pw") {
			t.Errorf("the log should name the address and the refusal, without the password:\n%s", b.LogTail(10))
		}
		waitDegraded(t, b, "disconnected", 30*time.Second)
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
