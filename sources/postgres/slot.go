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
	failover    bool   // a failover slot, synchronized to standbys (17+)
	synced      bool   // on a standby: a copy the slot sync worker keeps (17+)
	temporary   bool
}

func querySlot(ctx context.Context, pool *pgxpool.Pool, name string) (slotInfo, error) {
	// to_jsonb keeps the query valid across versions whose view has
	// different columns (wal_status 13+, conflicting 16+,
	// invalidation_reason, failover and synced 17+).
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
		Failover           bool    `json:"failover"`
		Synced             bool    `json:"synced"`
		Temporary          bool    `json:"temporary"`
	}
	if err := json.Unmarshal(raw, &row); err != nil {
		return slotInfo{}, fmt.Errorf("reading slot %s: %w", name, err)
	}
	si := slotInfo{exists: true, slotType: row.SlotType, active: row.Active,
		failover: row.Failover, synced: row.Synced, temporary: row.Temporary}
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

// slotSetup is what prepareSlot works with.
type slotSetup struct {
	conn     *pgconn.PgConn
	pool     *pgxpool.Pool
	st       *stateStore
	srv      *serverInfo
	ident    identity
	source   string
	pubs     []string
	emit     cdc.Emit
	failover bool // the slot is to be a failover slot
}

// prepareSlot reconciles the durable state with the slot the server has:
//
//   - no state, usable slot: a first run against an existing slot; stream
//     from it without a snapshot, and say so;
//   - no state, no slot: create it (with the initial snapshot if asked);
//   - no state, but history with another system at this address: the
//     cluster was replaced, so follow OnSlotLost;
//   - state of an unfinished creation, or of an initial snapshot left
//     unfinished by a version that read it all at once: go on with the
//     slot if it exists (its rows are read again in chunks), create it if
//     not;
//   - state with history and a usable slot at or behind the last position
//     the bridge saved: stream from it. Behind on the same timeline (a
//     stop whose last status update the server did not apply, or a server
//     crash that lost the slot's last position), streaming starts at the
//     saved position: that WAL is the same history, and every change
//     before it was accepted by Kinesis. Behind after a timeline change (a
//     failover), it starts at the slot's position, since the new timeline
//     may have forked before the saved one: the changes in between are
//     sent again, with their first ids;
//   - state with history, slot gone, invalidated or ahead of what the
//     bridge confirmed: creating a new slot at the current position, or
//     trusting the moved one, would silently skip changes, so follow
//     OnSlotLost.
func (s *Source) prepareSlot(ctx context.Context, su slotSetup) (slotPlan, error) {
	name := s.cfg.Slot
	state, err := su.st.load(ctx)
	if err != nil {
		return slotPlan{}, fatal(err)
	}
	slot, err := querySlot(ctx, su.pool, name)
	if err != nil {
		return slotPlan{}, err
	}
	if slot.exists {
		if err := checkSlotFits(slot, name, su.srv.database); err != nil {
			return slotPlan{}, fatal(err)
		}
		if slot.active {
			// The previous holder's walsender may not have noticed its end
			// yet; anything else streaming from our slot must stop first.
			s.endStaleWalsender(ctx, su.pool, slot.activePID)
			return slotPlan{}, fmt.Errorf("slot %s is in use by backend pid %d; waiting for it to be released", name, slot.activePID)
		}
	}
	usable := slot.exists && slot.invalidated == ""
	promoted := ""
	if state != nil && state.Timeline != 0 && state.Timeline != su.ident.timeline {
		promoted = fmt.Sprintf("the server is on timeline %d, the bridge last streamed on timeline %d: it was promoted (a failover) or restored since",
			su.ident.timeline, state.Timeline)
		s.log.Warn("the server changed timeline since the bridge last streamed (a failover or a restore): checking the slot's history",
			"timeline", su.ident.timeline, "previous_timeline", state.Timeline, "slot_exists", slot.exists,
			"slot_confirmed", formatLSN(slot.confirmed), "failover_slot", slot.failover)
	}

	switch {
	case state == nil:
		ep, old, err := s.otherSystem(ctx, su.ident)
		if err != nil {
			return slotPlan{}, fatal(err)
		}
		if old != nil {
			reason := fmt.Sprintf("the server at this address now has system identifier %s, but this bridge streamed the slot from system %s (timeline %d): "+
				"another cluster answers here (restored from a backup, or a logical copy), whose slots and LSNs are unrelated",
				su.ident.sysID, ep.SystemID, ep.Timeline)
			return s.slotLost(ctx, su, slot, reason, formatLSN(old.lastConfirmed()))
		}
		if usable {
			s.log.Warn("the slot exists but the checkpoint store has no record of it: streaming from the slot's position without a snapshot",
				"confirmed_flush_lsn", formatLSN(slot.confirmed))
			state = s.newState(su.ident, "adopted")
			state.ConsistentPoint = formatLSN(slot.confirmed)
			state.SnapshotComplete = true
			state.ConfirmedLSN = formatLSN(slot.confirmed)
			return s.useSlot(ctx, su, slot, state)
		}
		if slot.exists {
			s.log.Warn("dropping an unusable slot the bridge has no record of", "reason", slot.invalidated)
			if err := dropSlot(ctx, su.conn, name); err != nil {
				return slotPlan{}, err
			}
		}
		return s.createSlot(ctx, su, s.cfg.Snapshot == SnapshotInitial)

	case !state.streamed():
		snapshot := state.Snapshot == SnapshotInitial
		if usable {
			// Nothing was confirmed from the slot before its snapshot was
			// complete, so streaming from it loses nothing.
			s.log.Warn("the previous start did not finish the slot's creation or initial snapshot: going on with the existing slot",
				"snapshot", snapshot, "confirmed_flush_lsn", formatLSN(slot.confirmed))
			if state.ConsistentPoint == "" {
				state.ConsistentPoint = formatLSN(slot.confirmed)
			}
			state.SnapshotComplete = true
			if snapshot && len(state.Snapshots) == 0 {
				state.Snapshots = []*snapshotJob{newAllTablesJob("initial-" + hex16(slot.confirmed))}
			}
			return s.useSlot(ctx, su, slot, state)
		}
		if slot.exists {
			s.log.Warn("dropping the unusable slot an unfinished start left", "reason", slot.invalidated)
			if err := dropSlot(ctx, su.conn, name); err != nil {
				return slotPlan{}, err
			}
		}
		return s.createSlot(ctx, su, snapshot)

	case usable:
		if reason := slotAhead(state, slot); reason != "" {
			if promoted != "" {
				reason += "; " + promoted
			}
			return s.slotLost(ctx, su, slot, reason, formatLSN(state.lastConfirmed()))
		}
		sameHistory := promoted == "" && state.Timeline != 0 // useSlot records the timeline
		plan, err := s.useSlot(ctx, su, slot, state)
		if last := state.lastConfirmed(); err == nil && slot.confirmed < last {
			if sameHistory {
				s.log.Info("the slot is behind the position the bridge saved (its last status update was not applied, or the server restarted): "+
					"streaming from the saved position", "slot_confirmed", formatLSN(slot.confirmed), "saved", formatLSN(last))
				plan.start = last
			} else {
				s.log.Warn("the slot is behind the last position the bridge saved, after a timeline change: "+
					"the changes in between are sent again, with their first ids",
					"slot_confirmed", formatLSN(slot.confirmed), "saved", formatLSN(last))
			}
		}
		return plan, err
	}

	// The bridge streamed from this slot, and it is gone or unusable.
	reason := "it no longer exists (dropped, or lost in a failover)"
	if slot.exists {
		reason = slot.invalidated
	}
	if promoted != "" {
		if !slot.exists {
			reason = "it does not exist on this server, which took over from the one the bridge streamed from " +
				"(a slot survives a failover only as a failover slot: PostgreSQL 17+, CDCBRIDGE_POSTGRES_FAILOVER, sync_replication_slots on the standby)"
		}
		reason += "; " + promoted
	}
	return s.slotLost(ctx, su, slot, reason, formatLSN(state.lastConfirmed()))
}

// useSlot streams from an existing slot, making it a failover slot first
// when asked, and records the timeline.
func (s *Source) useSlot(ctx context.Context, su slotSetup, slot slotInfo, state *slotState) (slotPlan, error) {
	if su.failover && !slot.failover {
		if err := makeFailoverSlot(ctx, su.conn, s.cfg.Slot); err != nil {
			return slotPlan{}, err
		}
		s.log.Info("the slot is now a failover slot: standbys with sync_replication_slots keep a copy")
		slot.failover = true
	}
	s.noteFailoverSlot(slot.failover)
	state.Timeline = su.ident.timeline
	if slot.confirmed > state.lastConfirmed() {
		// A state saved after confirming, as before SavedBeforeConfirm.
		state.ConfirmedLSN = formatLSN(slot.confirmed)
	}
	state.SavedBeforeConfirm = true
	if err := su.st.save(ctx, state); err != nil {
		return slotPlan{}, err
	}
	return slotPlan{start: slot.confirmed, state: state}, nil
}

// slotLost follows OnSlotLost for a slot the bridge cannot trust.
func (s *Source) slotLost(ctx context.Context, su slotSetup, slot slotInfo, reason, last string) (slotPlan, error) {
	name := s.cfg.Slot
	s.m.slotLost.WithLabelValues(s.cfg.OnSlotLost).Inc()
	switch s.cfg.OnSlotLost {
	case OnSlotLostResnapshot:
		s.log.Warn("the slot this bridge streamed from is unusable: creating a new slot and reading a new snapshot",
			"reason", reason, "last_confirmed", last)
	case OnSlotLostContinue:
		s.log.Error("THE SLOT THIS BRIDGE STREAMED FROM IS UNUSABLE: streaming from the current position; "+
			"changes committed after the last confirmed LSN and before it ARE MISSING from the stream",
			"reason", reason, "last_confirmed", last)
		s.degradeSticky("slot lost; continued with a gap after " + last)
		if slot.exists && slot.invalidated == "" {
			// A slot that was moved ahead: the gap is as small as it gets.
			state := s.newState(su.ident, "adopted")
			state.ConsistentPoint = formatLSN(slot.confirmed)
			state.SnapshotComplete = true
			state.ConfirmedLSN = formatLSN(slot.confirmed)
			return s.useSlot(ctx, su, slot, state)
		}
	default:
		return slotPlan{}, fatal(fmt.Errorf("slot %s: %s, although this bridge streamed from it up to %s; "+
			"a new slot would start at the current position and miss the changes in between. "+
			"Set CDCBRIDGE_POSTGRES_ON_SLOT_LOST=resnapshot to read all rows again with a new slot, "+
			"or =continue to accept the gap", name, reason, last))
	}
	if slot.exists {
		if err := dropSlot(ctx, su.conn, name); err != nil {
			return slotPlan{}, err
		}
	}
	return s.createSlot(ctx, su, s.cfg.OnSlotLost == OnSlotLostResnapshot)
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

// newState starts the state of a slot the bridge creates or adopts now.
func (s *Source) newState(ident identity, snapshot string) *slotState {
	return &slotState{SystemID: ident.sysID, Database: ident.database, Slot: s.cfg.Slot, Snapshot: snapshot,
		Timeline: ident.timeline, SavedBeforeConfirm: true, CreatedAt: time.Now().UTC().Format(time.RFC3339)}
}

// createSlot records the intent, creates the slot and, with snapshot,
// queues a snapshot of every published table: streaming starts at the
// slot's consistent point at once, and the rows are read in chunks
// meanwhile (chunks.go). The state is saved before the slot exists, so a
// crash at any point leaves a record that makes the next start go on with
// the slot.
func (s *Source) createSlot(ctx context.Context, su slotSetup, snapshot bool) (slotPlan, error) {
	mode := SnapshotNever
	if snapshot {
		mode = SnapshotInitial
	}
	state := s.newState(su.ident, mode)
	if err := su.st.save(ctx, state); err != nil {
		return slotPlan{}, err
	}
	s.log.Info("creating the replication slot (waits for transactions open now to finish)", "snapshot", mode, "failover", su.failover)
	var res pglogrepl.CreateReplicationSlotResult
	err := whileBlocked(s.heartbeat, func() error {
		var err error
		res, err = pglogrepl.ParseCreateReplicationSlot(su.conn.Exec(ctx, createSlotCommand(s.cfg.Slot, su.failover)))
		return err
	})
	if err != nil {
		return slotPlan{}, fmt.Errorf("creating slot %s: %w", s.cfg.Slot, explainSlotError(err, su.srv))
	}
	s.noteFailoverSlot(su.failover)
	cp, err := parseLSN(res.ConsistentPoint)
	if err != nil {
		return slotPlan{}, fmt.Errorf("creating slot %s: consistent point: %w", s.cfg.Slot, err)
	}
	state.ConsistentPoint = formatLSN(cp)
	state.SnapshotComplete = true
	state.ConfirmedLSN = formatLSN(cp)
	if snapshot {
		state.Snapshots = []*snapshotJob{newAllTablesJob("initial-" + hex16(cp))}
	}
	// The slot exists: record it even when shutdown began meanwhile.
	if err := su.st.save(context.WithoutCancel(ctx), state); err != nil {
		return slotPlan{}, err
	}
	s.log.Info("slot created", "consistent_point", state.ConsistentPoint, "snapshot", mode)
	return slotPlan{start: cp, state: state}, nil
}

// newAllTablesJob is a snapshot of every published table.
func newAllTablesJob(id string) *snapshotJob {
	return &snapshotJob{ID: id, Requested: nowText(), AllTables: true}
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
