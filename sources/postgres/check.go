package postgres

import (
	"context"
	"fmt"
	"time"
)

// Check runs the preflight checks of `cdcbridge check` against cfg's
// server: connection, version, wal_level, replication privilege, a
// replication connection (pg_hba.conf treats those separately), the slot
// and the publication. Each result says what is wrong and how to fix it.
func Check(ctx context.Context, cfg Config) []CheckResult {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return []CheckResult{{Name: "configuration", Status: "fail", Detail: err.Error(), Fix: "correct the CDCBRIDGE_POSTGRES_* variables"}}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := newPool(ctx, cfg.URL)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		return []CheckResult{{Name: "connection", Status: "fail", Detail: err.Error(),
			Fix: "check CDCBRIDGE_POSTGRES_URL (host, port, database, credentials, sslmode) and that the server accepts connections from here"}}
	}
	defer pool.Close()
	out := []CheckResult{{Name: "connection", Status: "ok", Detail: "connected"}}
	srv, err := inspectServer(ctx, pool)
	if err != nil {
		return append(out, CheckResult{Name: "server", Status: "fail", Detail: err.Error()})
	}
	out = append(out, srv.checks()...)

	if conn, err := connectReplication(ctx, cfg.URL); err != nil {
		out = append(out, CheckResult{Name: "replication connection", Status: "fail", Detail: err.Error(),
			Fix: "allow replication connections for this role in pg_hba.conf (a line for database \"replication\" does not cover logical replication; the database name must match, or use \"all\")"})
	} else {
		out = append(out, CheckResult{Name: "replication connection", Status: "ok", Detail: "accepted"})
		conn.Close(ctx)
	}

	slot, err := querySlot(ctx, pool, cfg.Slot)
	switch {
	case err != nil:
		out = append(out, CheckResult{Name: "slot", Status: "fail", Detail: err.Error()})
	case !slot.exists:
		if srv.usedSlots >= srv.maxSlots {
			out = append(out, CheckResult{Name: "slot", Status: "fail",
				Detail: fmt.Sprintf("slot %s does not exist and every slot is in use (%d of max_replication_slots %d)", cfg.Slot, srv.usedSlots, srv.maxSlots),
				Fix:    "raise max_replication_slots (restart needed) or drop an unused slot"})
		} else {
			out = append(out, CheckResult{Name: "slot", Status: "ok", Detail: fmt.Sprintf("slot %s will be created", cfg.Slot)})
		}
	default:
		if err := checkSlotFits(slot, cfg.Slot, srv.database); err != nil {
			out = append(out, CheckResult{Name: "slot", Status: "fail", Detail: err.Error()})
		} else if slot.invalidated != "" {
			out = append(out, CheckResult{Name: "slot", Status: "fail",
				Detail: fmt.Sprintf("slot %s is unusable: %s", cfg.Slot, slot.invalidated),
				Fix:    "see CDCBRIDGE_POSTGRES_ON_SLOT_LOST (resnapshot or continue)"})
		} else {
			out = append(out, CheckResult{Name: "slot", Status: "ok", Detail: fmt.Sprintf("slot %s exists, confirmed up to %s", cfg.Slot, formatLSN(slot.confirmed))})
		}
	}

	out = append(out, checkFailover(ctx, cfg, pool, srv, slot)...)

	pubs, err := lookupPublications(ctx, pool, []string{cfg.Publication})
	switch {
	case err != nil:
		out = append(out, CheckResult{Name: "publication", Status: "fail", Detail: err.Error()})
	case len(pubs) == 1:
		out = append(out, CheckResult{Name: "publication", Status: "ok", Detail: fmt.Sprintf("publication %s exists", cfg.Publication)})
	default:
		var canCreate bool
		_ = pool.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&canCreate)
		if !canCreate {
			out = append(out, CheckResult{Name: "publication", Status: "fail",
				Detail: fmt.Sprintf("publication %s does not exist and role %s may not create one (CREATE on the database)", cfg.Publication, srv.user),
				Fix:    fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s, or create the publication yourself", quoteIdent(srv.database), quoteIdent(srv.user))})
			break
		}
		tables, err := candidateTables(ctx, pool, cfg.Tables)
		if err != nil {
			out = append(out, CheckResult{Name: "publication", Status: "fail", Detail: err.Error()})
			break
		}
		var notOwned, noID []string
		for _, t := range tables {
			if !t.owned {
				notOwned = append(notOwned, t.String())
			}
			if !t.identity {
				noID = append(noID, t.String())
			}
		}
		if len(notOwned) > 0 {
			out = append(out, CheckResult{Name: "publication", Status: "fail",
				Detail: fmt.Sprintf("publication %s must be created FOR TABLE, which needs ownership of each table; role %s does not own %v", cfg.Publication, srv.user, notOwned),
				Fix:    "make the bridge's role the tables' owner, create the publication as the owner, or narrow CDCBRIDGE_POSTGRES_TABLES"})
		} else {
			out = append(out, CheckResult{Name: "publication", Status: "ok", Detail: fmt.Sprintf("publication %s will be created with %d tables", cfg.Publication, len(tables))})
		}
		if len(noID) > 0 {
			out = append(out, CheckResult{Name: "replica identity", Status: "warn",
				Detail: fmt.Sprintf("tables without primary key or replica identity get inserts only: %v", noID),
				Fix:    "add primary keys, or ALTER TABLE ... REPLICA IDENTITY FULL"})
		}
	}
	return out
}
