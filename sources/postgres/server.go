package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// serverInfo is what the bridge needs to know about the server before it
// touches slots and publications.
type serverInfo struct {
	version     int    // server_version_num
	versionText string // server_version
	walLevel    string
	user        string
	database    string
	superuser   bool
	replication bool // the REPLICATION attribute
	// managed is set on Amazon RDS and Aurora, where ALTER SYSTEM is
	// refused and the rds.logical_replication parameter and the
	// rds_replication role take its place.
	managed        bool
	rdsReplication bool // member of rds_replication
	rdsSuperuser   bool // member of rds_superuser
	maxSlots       int
	usedSlots      int
	maxWalSenders  int
	// syncStandbySlots is synchronized_standby_slots (PostgreSQL 17+; ""
	// before): the physical slots of the standbys that logical walsenders
	// wait for, so no logical consumer gets ahead of a failover target.
	syncStandbySlots string
	inRecovery       bool
}

func inspectServer(ctx context.Context, q catalogQuerier) (*serverInfo, error) {
	si := &serverInfo{}
	rows, err := q.Query(ctx, `SELECT current_setting('server_version_num')::int, current_setting('server_version'),
			current_setting('wal_level'), current_user, current_database(), r.rolsuper, r.rolreplication,
			EXISTS (SELECT 1 FROM pg_catalog.pg_settings WHERE name = 'rds.logical_replication'),
			coalesce((SELECT pg_has_role(current_user, oid, 'member') FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication'), false),
			coalesce((SELECT pg_has_role(current_user, oid, 'member') FROM pg_catalog.pg_roles WHERE rolname = 'rds_superuser'), false),
			current_setting('max_replication_slots')::int,
			(SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
			current_setting('max_wal_senders')::int,
			coalesce(current_setting('synchronized_standby_slots', true), ''),
			pg_is_in_recovery()
		FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`)
	if err != nil {
		return nil, fmt.Errorf("inspecting the server: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("inspecting the server: %w", err)
		}
		return nil, errors.New("inspecting the server: current_user not found in pg_roles")
	}
	if err := rows.Scan(&si.version, &si.versionText, &si.walLevel, &si.user, &si.database, &si.superuser,
		&si.replication, &si.managed, &si.rdsReplication, &si.rdsSuperuser, &si.maxSlots, &si.usedSlots, &si.maxWalSenders,
		&si.syncStandbySlots, &si.inRecovery); err != nil {
		return nil, fmt.Errorf("inspecting the server: %w", err)
	}
	return si, rows.Err()
}

// CheckResult is one preflight check.
type CheckResult struct {
	Name   string `json:"name"`
	Status string `json:"status"` // "ok", "warn" or "fail"
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// minServerVersion is the oldest PostgreSQL the bridge runs on. 14 brought
// the two things it cannot do without: idle_session_timeout, with which the
// server frees the slot's lock of a leader it no longer hears from (without
// it a cut-off leader blocks failover until TCP gives up; see fence.go),
// and pgoutput's messages option, for message events.
const minServerVersion = 140000

func (si *serverInfo) checks() []CheckResult {
	var out []CheckResult
	if si.version < minServerVersion {
		out = append(out, CheckResult{Name: "postgres version", Status: "fail",
			Detail: fmt.Sprintf("PostgreSQL %s is not supported; cdcbridge needs 14 or newer (idle_session_timeout fences a lost leader, and pgoutput streams logical decoding messages, both from 14)", si.versionText),
			Fix:    "upgrade the server to PostgreSQL 14 or newer"})
	} else {
		out = append(out, CheckResult{Name: "postgres version", Status: "ok", Detail: fmt.Sprintf("PostgreSQL %s", si.versionText)})
	}
	if si.walLevel != "logical" {
		fix := "run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
		if si.managed {
			fix = "set rds.logical_replication = 1 in the DB (cluster) parameter group and reboot the instance (ALTER SYSTEM is refused on RDS/Aurora)"
		}
		out = append(out, CheckResult{Name: "wal_level", Status: "fail",
			Detail: fmt.Sprintf("wal_level is %q; logical replication needs \"logical\"", si.walLevel), Fix: fix})
	} else {
		out = append(out, CheckResult{Name: "wal_level", Status: "ok", Detail: "logical"})
	}
	switch {
	case si.superuser, si.replication, si.rdsReplication:
		out = append(out, CheckResult{Name: "replication privilege", Status: "ok", Detail: fmt.Sprintf("role %s may use replication", si.user)})
	default:
		fix := fmt.Sprintf("ALTER ROLE %s WITH REPLICATION (as a superuser)", quoteIdent(si.user))
		if si.managed {
			fix = fmt.Sprintf("GRANT rds_replication TO %s (on RDS/Aurora the REPLICATION attribute comes with that role)", quoteIdent(si.user))
		}
		out = append(out, CheckResult{Name: "replication privilege", Status: "fail",
			Detail: fmt.Sprintf("role %s lacks the replication privilege needed for slots and streaming", si.user), Fix: fix})
	}
	if si.maxWalSenders < 1 {
		out = append(out, CheckResult{Name: "max_wal_senders", Status: "fail", Detail: "max_wal_senders is 0",
			Fix: "set max_wal_senders to at least 1 (ALTER SYSTEM, or the parameter group on RDS) and restart"})
	}
	return out
}

// requireReady turns failed checks into one error, one line per problem.
func (si *serverInfo) requireReady() error {
	var msgs []string
	for _, c := range si.checks() {
		if c.Status == "fail" {
			msgs = append(msgs, fmt.Sprintf("%s: %s; fix: %s", c.Name, c.Detail, c.Fix))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New("postgres is not ready for cdcbridge:\n  " + strings.Join(msgs, "\n  "))
}

type identity struct {
	sysID    string
	database string
	timeline int32
}

// identify returns the system identifier and database of a replication
// connection.
func identify(ctx context.Context, conn *pgconn.PgConn) (identity, error) {
	res, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return identity{}, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	if res.DBName == "" {
		return identity{}, errors.New("IDENTIFY_SYSTEM: the connection is not bound to a database")
	}
	return identity{sysID: res.SystemID, database: res.DBName, timeline: res.Timeline}, nil
}

// walSenderTimeout reads wal_sender_timeout on the replication connection
// (status updates must come more often). The error is the query's; an
// answer it cannot read gives 0 (no timeout known), as the setting only
// shortens the status interval.
func walSenderTimeout(ctx context.Context, conn *pgconn.PgConn) (time.Duration, error) {
	res, err := conn.Exec(ctx, "SHOW wal_sender_timeout").ReadAll()
	if err != nil {
		return 0, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return 0, nil
	}
	d, err := parsePGDuration(string(res[0].Rows[0][0]))
	if err != nil {
		return 0, nil
	}
	return d, nil
}

// parsePGDuration reads a time setting as SHOW prints it ("60s", "1min",
// "500ms", "0").
func parsePGDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		d      time.Duration
	}{{"ms", time.Millisecond}, {"min", time.Minute}, {"s", time.Second}, {"h", time.Hour}, {"d", 24 * time.Hour}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			var v int64
			if _, err := fmt.Sscan(n, &v); err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			return time.Duration(v) * u.d, nil
		}
	}
	var v int64
	if _, err := fmt.Sscan(s, &v); err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return time.Duration(v) * time.Millisecond, nil
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
