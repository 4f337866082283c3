package testenv

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Every supported version must be installed and start under the user the
// tests run it as, whichever one the run's shared cluster is: a version
// that only the matrix uses would otherwise break unnoticed.
func TestPostgresEveryVersion(t *testing.T) {
	t.Parallel()
	for _, v := range PostgresVersions {
		t.Run(strconv.Itoa(v), func(t *testing.T) {
			t.Parallel()
			pg, err := StartPostgres(PostgresOptions{Version: v})
			if err != nil {
				Unavailable(t, "postgres", err)
			}
			t.Cleanup(func() { _ = pg.Stop() })
			if pg.Major != v {
				t.Errorf("Major = %d, want %d", pg.Major, v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, err := pgx.Connect(ctx, pg.URL("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var num int
			if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
				t.Fatal(err)
			}
			if num/10000 != v {
				t.Errorf("server_version_num = %d, want %d.x", num, v)
			}
			// What the bridge needs first: a pgoutput slot.
			if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('v', 'pgoutput')"); err != nil {
				t.Errorf("creating a pgoutput slot: %v", err)
			}
		})
	}
}

func TestPostgresVersionChoice(t *testing.T) {
	// t.Setenv: not parallel.
	for _, tc := range []struct {
		env     string
		want    int
		wantErr string // from PostgresBinDir(0)
	}{
		{env: "", want: DefaultPostgresVersion},
		{env: "17", want: 17},
		{env: " 18 ", want: 18},
		{env: "13", want: 0, wantErr: "CDCBRIDGE_TEST_PG_VERSION=\"13\": want one of [14 15 16 17 18]"},
		{env: "latest", want: 0, wantErr: "CDCBRIDGE_TEST_PG_VERSION=\"latest\""},
	} {
		t.Setenv(PostgresVersionEnv, tc.env)
		if got := PostgresVersion(); got != tc.want {
			t.Errorf("%s=%q: PostgresVersion() = %d, want %d", PostgresVersionEnv, tc.env, got, tc.want)
		}
		if tc.wantErr == "" {
			continue
		}
		if _, err := PostgresBinDir(0); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s=%q: PostgresBinDir(0) = %v, want an error with %q", PostgresVersionEnv, tc.env, err, tc.wantErr)
		}
		if _, err := StartPostgres(PostgresOptions{}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s=%q: StartPostgres = %v, want an error with %q", PostgresVersionEnv, tc.env, err, tc.wantErr)
		}
	}
	if _, err := PostgresBinDir(12); err == nil || !strings.Contains(err.Error(), "PostgreSQL 12") {
		t.Errorf("PostgresBinDir(12) = %v, want an error naming 12", err)
	}
}

// A version that is not installed names the install script.
func TestPostgresVersionMissing(t *testing.T) {
	t.Parallel()
	_, err := postgresBinDirIn(t.TempDir(), 17)
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL 17: initdb not found") || !strings.Contains(err.Error(), installHint) {
		t.Errorf("postgresBinDirIn(empty folder) = %v, want the missing initdb and %q", err, installHint)
	}
}

func TestMajorFromServerVersion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{
		"15.10 (Debian 15.10-1.pgdg120+1)": 15,
		"18.4":                             18,
		"17devel":                          17,
		"9.6.24":                           9,
	} {
		got, err := majorFromServerVersion(in)
		if err != nil || got != want {
			t.Errorf("majorFromServerVersion(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := majorFromServerVersion("devel"); err == nil {
		t.Error(`majorFromServerVersion("devel") succeeded`)
	}
}
