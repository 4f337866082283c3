package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestConnectErrorsExplained: errors a reconnect cannot mend stop the
// source with the server's reason and the fix; an unreachable server stays
// retryable.
func TestConnectErrorsExplained(t *testing.T) {
	pg := testenv.PG(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := strings.TrimSuffix(pg.URL("postgres"), "/postgres?sslmode=disable")
	tests := []struct {
		url, want string
		fatal     bool
	}{
		{strings.Replace(base, "postgres@", "nobody@", 1) + "/postgres?sslmode=disable", `role "nobody" does not exist (SQLSTATE 28000): the role does not exist or pg_hba.conf rejects it`, true},
		{base + "/no_such_db?sslmode=disable", `database "no_such_db" does not exist (SQLSTATE 3D000): fix the database name in CDCBRIDGE_POSTGRES_URL`, true},
		{"postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2", "connection refused", false},
	}
	for _, tt := range tests {
		_, err := connectNormal(ctx, tt.url)
		if err == nil || !strings.Contains(err.Error(), tt.want) || isFatal(err) != tt.fatal {
			t.Errorf("connectNormal(%s) = %v (fatal %v), want %q (fatal %v)", tt.url, err, isFatal(err), tt.want, tt.fatal)
		}
		if _, err := connectReplication(ctx, tt.url); err == nil || isFatal(err) != tt.fatal {
			t.Errorf("connectReplication(%s) = %v, want fatal %v", tt.url, err, tt.fatal)
		}
	}
}
