package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/jackc/pgx/v5/pgconn"
)

// A physical failover of the database (a standby promoted in place of a
// dead primary) keeps the system identifier and the LSNs, starts a new
// timeline, and keeps logical slots only when they are failover slots
// (PostgreSQL 17+): created with FAILOVER, synchronized to the standby by
// its slot sync worker (sync_replication_slots), with the primary's
// synchronized_standby_slots holding logical walsenders back until that
// standby has the WAL they send. The synchronized copy may lag: after a
// failover the slot is at or behind what the bridge confirmed, and the
// changes in between are sent again with their first ids.
//
// The bridge recognises what it cannot trust: a slot ahead of the last
// position it saved (it saves before it confirms, see positions), a slot
// missing after a timeline change, and another system identifier at the
// same address. Each goes to CDCBRIDGE_POSTGRES_ON_SLOT_LOST.

// Failover modes (Config.Failover).
const (
	FailoverAuto = "auto"  // failover slot when the server is set up for it
	FailoverOn   = "true"  // failover slot, or an error saying what is missing
	FailoverOff  = "false" // a plain slot
)

// failoverMajor is the first PostgreSQL major with failover slots.
const failoverMajor = 17

// wantFailover decides whether the slot is to be a failover slot. A
// failover slot without synchronized_standby_slots is unprotected: the
// bridge may receive changes no standby has, which a failover then loses
// or replaces with others at the same LSNs. That is the normal state of a
// primary just promoted, until its new standbys exist, so it is a warning
// (and a degraded status) rather than a reason to stop.
func wantFailover(mode string, srv *serverInfo) (want bool, warning string, err error) {
	switch mode {
	case FailoverOff:
		return false, "", nil
	case FailoverOn:
		if srv.version < failoverMajor*10000 {
			return false, "", fmt.Errorf("CDCBRIDGE_POSTGRES_FAILOVER=true needs failover slots, which PostgreSQL %d added; this server is %s. "+
				"Set it to false (a failover then loses the slot and CDCBRIDGE_POSTGRES_ON_SLOT_LOST decides) or upgrade", failoverMajor, srv.versionText)
		}
		if srv.syncStandbySlots == "" {
			return true, "the failover slot is unprotected: synchronized_standby_slots is empty, so the bridge may receive changes no standby has, " +
				"which a failover then loses or replaces with others at the same LSNs; set it to the physical slots of the standbys that may take over", nil
		}
		return true, "", nil
	}
	return srv.version >= failoverMajor*10000 && srv.syncStandbySlots != "", "", nil
}

// createSlotCommand is CREATE_REPLICATION_SLOT for a pgoutput slot
// without an exported snapshot (rows are read in chunks while streaming),
// as a failover slot when asked (17+).
func createSlotCommand(name string, failover bool) string {
	if !failover {
		// The old syntax: the only one PostgreSQL 14 knows.
		return fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput NOEXPORT_SNAPSHOT", name)
	}
	return fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)", name)
}

// makeFailoverSlot turns an existing slot into a failover slot (17+).
func makeFailoverSlot(ctx context.Context, conn *pgconn.PgConn, name string) error {
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER_REPLICATION_SLOT %s (FAILOVER true)", name)).ReadAll(); err != nil {
		return fmt.Errorf("making slot %s a failover slot: %w", name, err)
	}
	return nil
}

// slotAhead explains why a usable slot the bridge streamed from cannot be
// trusted, or returns "". The state holds the furthest the bridge may
// have confirmed, so a slot beyond it was moved by something else, and
// the changes in between may never have been sent.
func slotAhead(state *slotState, slot slotInfo) string {
	if !state.SavedBeforeConfirm {
		return "" // written before the rule: the slot may be up to a save ahead
	}
	last := state.lastConfirmed()
	if slot.confirmed <= last {
		return ""
	}
	return fmt.Sprintf("its confirmed position %s is ahead of %s, the furthest this bridge confirmed: something else moved it "+
		"(another consumer of the slot, pg_replication_slot_advance, or a slot of the same name created anew), "+
		"so changes in between may never have been sent", formatLSN(slot.confirmed), formatLSN(last))
}

// lastConfirmed is the furthest position the bridge may have confirmed.
func (st *slotState) lastConfirmed() uint64 {
	lsn, _ := parseLSN(st.ConfirmedLSN)
	if cp, _ := parseLSN(st.ConsistentPoint); cp > lsn {
		lsn = cp
	}
	return lsn
}

// endpoint remembers which system the bridge last streamed from at the
// configured address, so that another cluster answering there (restored
// from a backup, a logical copy behind the same DNS name) is not taken
// for a first run: states are keyed by system identifier, and the new
// system has none.
type endpoint struct {
	SystemID string `json:"system_id"`
	Timeline int32  `json:"timeline"`
}

// endpointKey names the record for the URL's address, database and slot
// (never its credentials).
func endpointKey(url, slot string) (string, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return "", fmt.Errorf("parsing URL: %w", err)
	}
	addr := cfg.Host
	if !strings.HasPrefix(addr, "/") {
		addr = net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	}
	return "postgres-endpoint/" + addr + "/" + cfg.Database + "/" + slot, nil
}

func loadEndpoint(ctx context.Context, store checkpoint.Store, key string) (*endpoint, error) {
	c, err := store.Load(ctx, key)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading checkpoint %s: %w", key, err)
	}
	var ep endpoint
	if err := json.Unmarshal(c.Data, &ep); err != nil {
		return nil, fmt.Errorf("checkpoint %s: unreadable: %w", key, err)
	}
	return &ep, nil
}

func saveEndpoint(ctx context.Context, store checkpoint.Store, key string, ep endpoint) error {
	data, err := json.Marshal(ep)
	if err != nil {
		return err
	}
	// The position stays constant: the record is replaced, not advanced.
	if err := store.Save(ctx, key, checkpoint.Checkpoint{Position: "0", Data: data}); err != nil {
		return fmt.Errorf("saving checkpoint %s: %w", key, err)
	}
	return nil
}

// otherSystem returns the state of the slot on the system the bridge last
// streamed from at this address, when that is another system than ident's
// and the bridge has history there; nil otherwise.
func (s *Source) otherSystem(ctx context.Context, ident identity) (*endpoint, *slotState, error) {
	key, err := endpointKey(s.cfg.URL, s.cfg.Slot)
	if err != nil {
		return nil, nil, err
	}
	ep, err := loadEndpoint(ctx, s.store, key)
	if err != nil || ep == nil || ep.SystemID == ident.sysID {
		return nil, nil, err
	}
	old := &stateStore{store: s.store, key: stateKey(ep.SystemID, ident.database, s.cfg.Slot)}
	st, err := old.load(ctx)
	if err != nil || st == nil || !st.streamed() {
		return nil, nil, err
	}
	return ep, st, nil
}

// noteEndpoint records the system streamed from at this address.
func (s *Source) noteEndpoint(ctx context.Context, ident identity) error {
	key, err := endpointKey(s.cfg.URL, s.cfg.Slot)
	if err != nil {
		return err
	}
	ep, err := loadEndpoint(ctx, s.store, key)
	if err != nil {
		return err
	}
	if ep != nil && ep.SystemID == ident.sysID && ep.Timeline == ident.timeline {
		return nil
	}
	return saveEndpoint(ctx, s.store, key, endpoint{SystemID: ident.sysID, Timeline: ident.timeline})
}
