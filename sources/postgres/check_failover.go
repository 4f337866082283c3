package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// checkFailover reports whether the slot survives a failover of the
// database: on the primary, the mode, synchronized_standby_slots and the
// standbys' physical slots; on each standby in cfg.StandbyURLs,
// sync_replication_slots, hot_standby_feedback, its slot being waited for,
// and the synchronized copy of the bridge's slot.
func checkFailover(ctx context.Context, cfg Config, pool *pgxpool.Pool, srv *serverInfo, slot slotInfo) []CheckResult {
	const name = "failover slot"
	if srv.version < failoverMajor*10000 {
		r := CheckResult{Name: name, Status: "ok",
			Detail: fmt.Sprintf("PostgreSQL %s has no failover slots: a failover of the database loses the slot, and CDCBRIDGE_POSTGRES_ON_SLOT_LOST=%s decides then", srv.versionText, cfg.OnSlotLost)}
		if cfg.Failover == FailoverOn {
			r.Status, r.Fix = "fail", fmt.Sprintf("upgrade to PostgreSQL %d+, or set CDCBRIDGE_POSTGRES_FAILOVER=false", failoverMajor)
			r.Detail = fmt.Sprintf("CDCBRIDGE_POSTGRES_FAILOVER=true, but PostgreSQL %s has no failover slots (%d added them)", srv.versionText, failoverMajor)
		}
		return []CheckResult{r}
	}
	want, unprotected, err := wantFailover(cfg.Failover, srv)
	if err == nil && unprotected != "" {
		err = errors.New(unprotected)
	}
	if err != nil {
		return []CheckResult{{Name: name, Status: "fail", Detail: err.Error(),
			Fix: "set synchronized_standby_slots on the primary to the standbys' physical slots, or CDCBRIDGE_POSTGRES_FAILOVER=false"}}
	}
	if !want {
		r := CheckResult{Name: name, Status: "ok", Detail: "off (CDCBRIDGE_POSTGRES_FAILOVER=false): a failover of the database loses the slot"}
		if cfg.Failover == FailoverAuto {
			r.Detail = "not in use: synchronized_standby_slots is empty, so no standby is set up to take the slot over; a failover loses it"
		}
		if slot.exists && slot.failover {
			r.Status = "warn"
			r.Detail = "the slot is a failover slot, but synchronized_standby_slots is empty: the bridge may receive changes no standby has, which a failover then loses or replaces with others at the same LSNs"
			r.Fix = "set synchronized_standby_slots to the physical slots of the standbys that may take over"
		}
		return []CheckResult{r}
	}

	var out []CheckResult
	switch {
	case !slot.exists:
		out = append(out, CheckResult{Name: name, Status: "ok", Detail: fmt.Sprintf("slot %s will be created as a failover slot", cfg.Slot)})
	case slot.failover:
		out = append(out, CheckResult{Name: name, Status: "ok", Detail: fmt.Sprintf("slot %s is a failover slot", cfg.Slot)})
	default:
		out = append(out, CheckResult{Name: name, Status: "ok", Detail: fmt.Sprintf("slot %s will be made a failover slot at start", cfg.Slot)})
	}
	standbySlots := splitSettingList(srv.syncStandbySlots)
	out = append(out, checkStandbySlots(ctx, pool, standbySlots)...)
	if len(cfg.StandbyURLs) == 0 {
		return append(out, CheckResult{Name: "standby", Status: "warn",
			Detail: "no standby checked: whether a standby keeps a usable copy of the slot is only visible there",
			Fix:    "set CDCBRIDGE_POSTGRES_STANDBY_URLS to the standbys that may take over, and run check again"})
	}
	for i, u := range cfg.StandbyURLs {
		out = append(out, checkStandby(ctx, fmt.Sprintf("standby %d", i+1), u, cfg.Slot, standbySlots)...)
	}
	return out
}

// checkStandbySlots looks, on the primary, at each physical slot named in
// synchronized_standby_slots: logical walsenders wait for every one of
// them, so a missing or idle one stalls the bridge.
func checkStandbySlots(ctx context.Context, pool *pgxpool.Pool, names []string) []CheckResult {
	var out []CheckResult
	for _, n := range names {
		const name = "synchronized_standby_slots"
		var slotType *string
		var active, feedback bool
		err := pool.QueryRow(ctx, `SELECT slot_type, active, xmin IS NOT NULL OR catalog_xmin IS NOT NULL
			FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, n).Scan(&slotType, &active, &feedback)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			out = append(out, CheckResult{Name: name, Status: "fail",
				Detail: fmt.Sprintf("slot %s named in synchronized_standby_slots does not exist: logical walsenders wait for it, so the bridge receives nothing", n),
				Fix:    fmt.Sprintf("create it (SELECT pg_create_physical_replication_slot('%s')) and point the standby's primary_slot_name at it, or remove it from synchronized_standby_slots", n)})
		case err != nil:
			out = append(out, CheckResult{Name: name, Status: "fail", Detail: fmt.Sprintf("looking up slot %s: %v", n, err)})
		case slotType == nil || *slotType != "physical":
			out = append(out, CheckResult{Name: name, Status: "fail",
				Detail: fmt.Sprintf("slot %s named in synchronized_standby_slots is not a physical slot", n),
				Fix:    "name the physical slots of the standbys (their primary_slot_name)"})
		case !active:
			out = append(out, CheckResult{Name: name, Status: "warn",
				Detail: fmt.Sprintf("no standby streams from slot %s: the bridge receives nothing new until one does (logical walsenders wait for it)", n),
				Fix:    "start the standby, or remove its slot from synchronized_standby_slots while it is away"})
		case !feedback:
			out = append(out, CheckResult{Name: name, Status: "warn",
				Detail: fmt.Sprintf("slot %s is streamed, but its standby sends no hot_standby_feedback (the slot holds no xmin): the standby's copy of the logical slot cannot be kept", n),
				Fix:    "set hot_standby_feedback = on on that standby"})
		default:
			out = append(out, CheckResult{Name: name, Status: "ok", Detail: fmt.Sprintf("slot %s: a standby streams from it with hot_standby_feedback", n)})
		}
	}
	return out
}

// checkStandby connects to one standby and checks what slot
// synchronization needs there.
func checkStandby(ctx context.Context, name, url, slotName string, standbySlots []string) []CheckResult {
	pool, err := newPool(ctx, url)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		return []CheckResult{{Name: name, Status: "fail", Detail: fmt.Sprintf("connecting: %v", err),
			Fix: "check CDCBRIDGE_POSTGRES_STANDBY_URLS"}}
	}
	defer pool.Close()
	var inRecovery bool
	var syncSlots, feedback, primarySlot string
	var dbnameInConninfo bool
	err = pool.QueryRow(ctx, `SELECT pg_is_in_recovery(), coalesce(current_setting('sync_replication_slots', true), ''),
			current_setting('hot_standby_feedback'), current_setting('primary_slot_name'),
			current_setting('primary_conninfo') ~ '(^|\s)dbname\s*='`).Scan(&inRecovery, &syncSlots, &feedback, &primarySlot, &dbnameInConninfo)
	if err != nil {
		return []CheckResult{{Name: name, Status: "fail", Detail: fmt.Sprintf("reading its settings: %v", err)}}
	}
	if !inRecovery {
		return []CheckResult{{Name: name, Status: "fail", Detail: "the server is not a standby (it is not in recovery)",
			Fix: "list only standbys in CDCBRIDGE_POSTGRES_STANDBY_URLS"}}
	}
	var problems, fixes []string
	if syncSlots != "on" {
		problems = append(problems, "sync_replication_slots is off")
		fixes = append(fixes, "sync_replication_slots = on")
	}
	if feedback != "on" {
		problems = append(problems, "hot_standby_feedback is off")
		fixes = append(fixes, "hot_standby_feedback = on")
	}
	if primarySlot == "" {
		problems = append(problems, "primary_slot_name is empty")
		fixes = append(fixes, "primary_slot_name = a physical slot on the primary")
	} else if !slices.Contains(standbySlots, primarySlot) {
		problems = append(problems, fmt.Sprintf("its slot %s is not in the primary's synchronized_standby_slots", primarySlot))
		fixes = append(fixes, fmt.Sprintf("add %s to synchronized_standby_slots on the primary", primarySlot))
	}
	if !dbnameInConninfo {
		problems = append(problems, "primary_conninfo names no dbname (slot synchronization needs one)")
		fixes = append(fixes, "add dbname=... to primary_conninfo")
	}
	if len(problems) > 0 {
		return []CheckResult{{Name: name, Status: "fail", Detail: strings.Join(problems, "; "), Fix: "on the standby: " + strings.Join(fixes, ", ")}}
	}
	out := []CheckResult{{Name: name, Status: "ok", Detail: fmt.Sprintf("sync_replication_slots and hot_standby_feedback on, streaming through slot %s", primarySlot)}}
	slot, err := querySlot(ctx, pool, slotName)
	switch {
	case err != nil:
		out = append(out, CheckResult{Name: name + " slot", Status: "fail", Detail: err.Error()})
	case !slot.exists:
		out = append(out, CheckResult{Name: name + " slot", Status: "fail",
			Detail: fmt.Sprintf("the standby has no copy of slot %s: a failover to it loses the slot", slotName),
			Fix:    "make the slot a failover slot (the bridge does at start with CDCBRIDGE_POSTGRES_FAILOVER) and wait for the slot sync worker"})
	case !slot.synced || slot.temporary:
		out = append(out, CheckResult{Name: name + " slot", Status: "warn",
			Detail: fmt.Sprintf("the standby's copy of slot %s is not usable yet (synced %t, temporary %t): it becomes so once the slot moves on the primary past what the standby holds", slotName, slot.synced, slot.temporary),
			Fix:    "let the bridge stream for a while and check again"})
	default:
		out = append(out, CheckResult{Name: name + " slot", Status: "ok",
			Detail: fmt.Sprintf("the standby keeps a synced copy of slot %s, confirmed up to %s", slotName, formatLSN(slot.confirmed))})
	}
	return out
}

// splitSettingList splits a list setting such as
// synchronized_standby_slots ("a, b").
func splitSettingList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.Trim(strings.TrimSpace(p), `"`); p != "" {
			out = append(out, p)
		}
	}
	return out
}
