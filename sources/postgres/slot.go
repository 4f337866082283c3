package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// slotInfo is the slot as pg_replication_slots shows it.
type slotInfo struct {
	exists      bool
	plugin      string
	slotType    string
	database    string
	active      bool
	activePID   int
	confirmed   uint64
	walStatus   string // "" before PostgreSQL 13
	invalidated string // why the slot is unusable, "" when it is usable
}

func querySlot(ctx context.Context, pool *pgxpool.Pool, name string) (slotInfo, error) {
	// to_jsonb keeps the query valid across versions whose view has
	// different columns (wal_status 13+, conflicting 16+,
	// invalidation_reason 17+).
	var raw []byte
	err := pool.QueryRow(ctx, `SELECT to_jsonb(s) FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1`, name).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return slotInfo{}, nil
	}
	if err != nil {
		return slotInfo{}, fmt.Errorf("looking up slot %s: %w", name, err)
	}
	var row struct {
		Plugin             *string `json:"plugin"`
		SlotType           string  `json:"slot_type"`
		Database           *string `json:"database"`
		Active             bool    `json:"active"`
		ActivePID          *int    `json:"active_pid"`
		ConfirmedFlushLSN  *string `json:"confirmed_flush_lsn"`
		WALStatus          *string `json:"wal_status"`
		Conflicting        *bool   `json:"conflicting"`
		InvalidationReason *string `json:"invalidation_reason"`
	}
	if err := json.Unmarshal(raw, &row); err != nil {
		return slotInfo{}, fmt.Errorf("reading slot %s: %w", name, err)
	}
	si := slotInfo{exists: true, slotType: row.SlotType, active: row.Active}
	if row.Plugin != nil {
		si.plugin = *row.Plugin
	}
	if row.Database != nil {
		si.database = *row.Database
	}
	if row.ActivePID != nil {
		si.activePID = *row.ActivePID
	}
	if row.ConfirmedFlushLSN != nil {
		si.confirmed, _ = parseLSN(*row.ConfirmedFlushLSN)
	}
	if row.WALStatus != nil {
		si.walStatus = *row.WALStatus
	}
	switch {
	case si.walStatus == "lost":
		si.invalidated = "wal_status = lost: the WAL it needs was removed"
	case row.InvalidationReason != nil && *row.InvalidationReason != "":
		si.invalidated = "invalidated: " + *row.InvalidationReason
	case row.Conflicting != nil && *row.Conflicting:
		si.invalidated = "invalidated by a recovery conflict"
	}
	return si, nil
}

// slotPlan is where streaming starts and the state to keep updating.
type slotPlan struct {
	start uint64
	state *slotState
}

// prepareSlot reconciles the durable state with the slot the server has:
//
//   - no state, usable slot: a first run against an existing slot; stream
//     from it without a snapshot, and say so;
//   - no state, no slot: create it (with the initial snapshot if asked);
//   - state of an unfinished creation or snapshot: the slot may have been
//     created but its snapshot's rows not all acknowledged, so drop it and
//     start over (read events repeat; no row is lost);
//   - state with history and a usable slot: stream from it;
//   - state with history, slot gone or invalidated: creating a new slot at
//     the current position would silently skip every change in between,
//     so follow OnSlotLost.
func (s *Source) prepareSlot(ctx context.Context, conn *pgconn.PgConn, pool *pgxpool.Pool, st *stateStore,
	srv *serverInfo, source string, pubs []string, emit cdc.Emit) (slotPlan, error) {
	name := s.cfg.Slot
	state, err := st.load(ctx)
	if err != nil {
		return slotPlan{}, fatal(err)
	}
	slot, err := querySlot(ctx, pool, name)
	if err != nil {
		return slotPlan{}, err
	}
	if slot.exists {
		if err := checkSlotFits(slot, name, srv.database); err != nil {
			return slotPlan{}, fatal(err)
		}
		if slot.active {
			// The previous holder's walsender may not have noticed its end
			// yet; anything else streaming from our slot must stop first.
			s.endStaleWalsender(ctx, pool, slot.activePID)
			return slotPlan{}, fmt.Errorf("slot %s is in use by backend pid %d; waiting for it to be released", name, slot.activePID)
		}
	}
	usable := slot.exists && slot.invalidated == ""

	switch {
	case state == nil && usable:
		s.log.Warn("the slot exists but the checkpoint store has no record of it: streaming from the slot's position without a snapshot",
			"confirmed_flush_lsn", formatLSN(slot.confirmed))
		state = s.newState(srv, "adopted")
		state.ConsistentPoint = formatLSN(slot.confirmed)
		state.SnapshotComplete = true
		state.ConfirmedLSN = formatLSN(slot.confirmed)
		if err := st.save(ctx, state); err != nil {
			return slotPlan{}, err
		}
		return slotPlan{start: slot.confirmed, state: state}, nil

	case state == nil:
		if slot.exists {
			s.log.Warn("dropping an unusable slot the bridge has no record of", "reason", slot.invalidated)
			if err := dropSlot(ctx, conn, name); err != nil {
				return slotPlan{}, err
			}
		}
		return s.createSlot(ctx, conn, pool, st, srv, source, pubs, emit, s.cfg.Snapshot == SnapshotInitial)

	case !state.streamed():
		snapshot := state.Snapshot == SnapshotInitial
		if slot.exists {
			s.log.Warn("the previous slot creation or initial snapshot did not finish: dropping the slot and starting over",
				"snapshot", snapshot)
			if err := dropSlot(ctx, conn, name); err != nil {
				return slotPlan{}, err
			}
		}
		return s.createSlot(ctx, conn, pool, st, srv, source, pubs, emit, snapshot)

	case usable:
		return slotPlan{start: slot.confirmed, state: state}, nil
	}

	// The bridge streamed from this slot, and it is gone or unusable.
	reason := "it no longer exists (dropped, or lost in a failover)"
	if slot.exists {
		reason = slot.invalidated
	}
	last := state.ConfirmedLSN
	if last == "" {
		last = state.ConsistentPoint
	}
	s.m.slotLost.WithLabelValues(s.cfg.OnSlotLost).Inc()
	switch s.cfg.OnSlotLost {
	case OnSlotLostResnapshot:
		s.log.Warn("the slot this bridge streamed from is unusable: creating a new slot and reading a new snapshot",
			"reason", reason, "last_confirmed", last)
	case OnSlotLostContinue:
		s.log.Error("THE SLOT THIS BRIDGE STREAMED FROM IS UNUSABLE: creating a new slot at the current position; "+
			"changes committed after the last confirmed LSN and before the new slot ARE MISSING from the stream",
			"reason", reason, "last_confirmed", last)
		s.degradeSticky("slot lost; continued with a gap after " + last)
	default:
		return slotPlan{}, fatal(fmt.Errorf("slot %s: %s, although this bridge streamed from it up to %s; "+
			"a new slot would start at the current position and miss the changes in between. "+
			"Set CDCBRIDGE_POSTGRES_ON_SLOT_LOST=resnapshot to read all rows again with a new slot, "+
			"or =continue to accept the gap", name, reason, last))
	}
	if slot.exists {
		if err := dropSlot(ctx, conn, name); err != nil {
			return slotPlan{}, err
		}
	}
	return s.createSlot(ctx, conn, pool, st, srv, source, pubs, emit, s.cfg.OnSlotLost == OnSlotLostResnapshot)
}

func checkSlotFits(slot slotInfo, name, database string) error {
	switch {
	case slot.slotType != "logical":
		return fmt.Errorf("slot %s is a %s slot; cdcbridge needs a logical slot: choose another CDCBRIDGE_POSTGRES_SLOT", name, slot.slotType)
	case slot.plugin != "pgoutput":
		return fmt.Errorf("slot %s uses the %s plugin; cdcbridge needs pgoutput: choose another CDCBRIDGE_POSTGRES_SLOT or drop it", name, slot.plugin)
	case slot.database != database:
		return fmt.Errorf("slot %s belongs to database %s, not %s: choose another CDCBRIDGE_POSTGRES_SLOT", name, slot.database, database)
	}
	return nil
}

func (s *Source) newState(srv *serverInfo, snapshot string) *slotState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &slotState{SystemID: s.sysID, Database: s.database, Slot: s.cfg.Slot, Snapshot: snapshot,
		CreatedAt: time.Now().UTC().Format(time.RFC3339)}
}

// createSlot records the intent, creates the slot and, with snapshot,
// reads every published table in the slot's exported snapshot. The state
// is saved before the slot exists, so a crash at any point leaves a record
// that makes the next start drop the slot and begin again.
func (s *Source) createSlot(ctx context.Context, conn *pgconn.PgConn, pool *pgxpool.Pool, st *stateStore,
	srv *serverInfo, source string, pubs []string, emit cdc.Emit, snapshot bool) (slotPlan, error) {
	mode := SnapshotNever
	if snapshot {
		mode = SnapshotInitial
	}
	state := s.newState(srv, mode)
	if err := st.save(ctx, state); err != nil {
		return slotPlan{}, err
	}
	action := "NOEXPORT_SNAPSHOT"
	if snapshot {
		action = "EXPORT_SNAPSHOT"
	}
	s.log.Info("creating the replication slot (waits for transactions open now to finish)", "snapshot", mode)
	var res pglogrepl.CreateReplicationSlotResult
	err := whileBlocked(s.heartbeat, func() error {
		var err error
		res, err = pglogrepl.CreateReplicationSlot(ctx, conn, s.cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: action})
		return err
	})
	if err != nil {
		return slotPlan{}, fmt.Errorf("creating slot %s: %w", s.cfg.Slot, explainSlotError(err, srv))
	}
	cp, err := parseLSN(res.ConsistentPoint)
	if err != nil {
		return slotPlan{}, fmt.Errorf("creating slot %s: consistent point: %w", s.cfg.Slot, err)
	}
	state.ConsistentPoint = formatLSN(cp)
	s.log.Info("slot created", "consistent_point", state.ConsistentPoint)
	if snapshot {
		if err := st.save(ctx, state); err != nil {
			return slotPlan{}, err
		}
		// Back-pressure can hold the snapshot in emit for long: that is a
		// normal wait, so the heartbeat goes on meanwhile.
		err := whileBlocked(s.heartbeat, func() error {
			return s.readSnapshot(ctx, pool, res.SnapshotName, cp, source, pubs, emit)
		})
		if err != nil {
			return slotPlan{}, err
		}
	}
	state.SnapshotComplete = true
	state.ConfirmedLSN = formatLSN(cp)
	// Every read event is accepted: record it even when shutdown began
	// meanwhile, or the next start would drop the slot and read it all again.
	if err := st.save(context.WithoutCancel(ctx), state); err != nil {
		return slotPlan{}, err
	}
	return slotPlan{start: cp, state: state}, nil
}

func dropSlot(ctx context.Context, conn *pgconn.PgConn, name string) error {
	if err := pglogrepl.DropReplicationSlot(ctx, conn, name, pglogrepl.DropReplicationSlotOptions{}); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42704" { // already gone
			return nil
		}
		return fmt.Errorf("dropping slot %s: %w", name, err)
	}
	return nil
}

func explainSlotError(err error, srv *serverInfo) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "53400": // configuration_limit_exceeded
		return fatal(fmt.Errorf("%w; every replication slot is in use (max_replication_slots = %d): raise max_replication_slots or drop an unused slot", err, srv.maxSlots))
	case "42501":
		return fatal(fmt.Errorf("%w; the role needs the replication privilege", err))
	}
	return err
}
