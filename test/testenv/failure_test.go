package testenv_test

import (
	"strings"
	"testing"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// A server that cannot start must say why: the missing binary and how to
// install it, or the server's own complaint from its log.
func TestPostgresStartFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts testenv.PostgresOptions
		want []string
	}{
		{
			name: "no binaries",
			opts: testenv.PostgresOptions{BinDir: "/nonexistent"},
			want: []string{"initdb not found in /nonexistent", "scripts/install-test-deps"},
		},
		{
			name: "bad setting",
			opts: testenv.PostgresOptions{Settings: map[string]string{"wal_level": "sideways"}},
			want: []string{"exited before it was ready", `invalid value for parameter "wal_level"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg, err := testenv.StartPostgres(tc.opts)
			if err == nil {
				_ = pg.Stop()
				t.Fatal("StartPostgres succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
