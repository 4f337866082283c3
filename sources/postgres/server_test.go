package postgres

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestServerChecksExplain(t *testing.T) {
	tests := []struct {
		name   string
		si     serverInfo
		check  string
		fixHas string
	}{
		{"old version", serverInfo{version: 110000, versionText: "11.2", walLevel: "logical", superuser: true, maxWalSenders: 10}, "postgres version", "14 or newer"},
		// 12 and 13 ran once; they lack idle_session_timeout (the leader
		// fence) and streamed messages.
		{"13", serverInfo{version: 130016, versionText: "13.16", walLevel: "logical", superuser: true, maxWalSenders: 10}, "postgres version", "PostgreSQL 14 or newer"},
		{"wal_level", serverInfo{version: 150000, walLevel: "replica", superuser: true, maxWalSenders: 10}, "wal_level", "ALTER SYSTEM SET wal_level = logical"},
		{"wal_level rds", serverInfo{version: 150000, walLevel: "replica", superuser: true, managed: true, maxWalSenders: 10}, "wal_level", "rds.logical_replication = 1"},
		{"privilege", serverInfo{version: 150000, walLevel: "logical", user: "app", maxWalSenders: 10}, "replication privilege", `ALTER ROLE "app" WITH REPLICATION`},
		{"privilege rds", serverInfo{version: 150000, walLevel: "logical", user: "app", managed: true, maxWalSenders: 10}, "replication privilege", `GRANT rds_replication TO "app"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.si.requireReady()
			if err == nil {
				t.Fatal("no error")
			}
			var found bool
			for _, line := range strings.Split(err.Error(), "\n")[1:] {
				if strings.Contains(line, tt.check+":") && strings.Contains(line, tt.fixHas) {
					found = true
				}
			}
			if !found {
				t.Errorf("error %q lacks a %q line with %q", err, tt.check, tt.fixHas)
			}
		})
	}
}

func TestWalLevelNotLogical(t *testing.T) {
	_, url := privatePG(t, map[string]string{"wal_level": "replica"})
	results := Check(context.Background(), Config{URL: url})
	var got CheckResult
	for _, r := range results {
		if r.Name == "wal_level" {
			got = r
		}
	}
	if got.Status != "fail" || !strings.Contains(got.Fix, "wal_level = logical") {
		t.Errorf("wal_level check: %+v", got)
	}
	r := startSource(t, Config{URL: url}, newMemStore(), newSink(t).emit)
	select {
	case err := <-r.done:
		close(r.done)
		if err == nil || !strings.Contains(err.Error(), "wal_level") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not fail")
	}
}
