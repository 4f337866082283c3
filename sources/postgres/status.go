package postgres

import (
	"slices"
)

// Status is the source's state for the daemon's /status endpoint.
type Status struct {
	Role         string   `json:"role"` // active, standby or stopped
	Slot         string   `json:"slot"`
	Publications []string `json:"publications,omitempty"`
	serverStatus
	ConfirmedLSN  string         `json:"confirmed_lsn,omitempty"`
	SlotLagBytes  *int64         `json:"slot_lag_bytes,omitempty"`
	PendingEvents int            `json:"pending_events"`
	Snapshots     []SnapshotInfo `json:"snapshots,omitempty"`
	Degraded      []string       `json:"degraded"`
}

// Status returns a snapshot of the source's state (JSON-marshalable).
func (s *Source) Status() any {
	s.mu.Lock()
	st := Status{
		Role: s.role, Slot: s.cfg.Slot, Publications: slices.Clone(s.pubs),
		serverStatus: s.server, Degraded: []string{},
	}
	if s.lagKnown {
		lag := s.slotLag
		st.SlotLagBytes = &lag
	}
	st.Snapshots = slices.Clone(s.snaps)
	for r := range s.degraded {
		st.Degraded = append(st.Degraded, r)
	}
	s.mu.Unlock()
	slices.Sort(st.Degraded)
	if p := s.pos.Load(); p != nil {
		st.ConfirmedLSN = formatLSN(p.current())
		st.PendingEvents = p.tracker.Pending()
	}
	return st
}

// serverStatus says which server the source reads from. A failover shows
// as a new timeline with the same system identifier.
type serverStatus struct {
	SystemID      string `json:"system_id,omitempty"`
	Database      string `json:"database,omitempty"`
	Timeline      int32  `json:"timeline,omitempty"`
	ServerVersion string `json:"server_version,omitempty"`
	// FailoverSlot is true when the slot is a failover slot (PostgreSQL
	// 17+), which standbys keep a copy of.
	FailoverSlot bool `json:"failover_slot"`
}

// noteServer records the server of a new session.
func (s *Source) noteServer(srv *serverInfo, ident identity) {
	s.mu.Lock()
	s.server.SystemID, s.server.Database = ident.sysID, ident.database
	s.server.Timeline, s.server.ServerVersion = ident.timeline, srv.versionText
	s.mu.Unlock()
	s.m.setServer(ident.sysID, ident.timeline, srv.version)
}

func (s *Source) noteFailoverSlot(on bool) {
	s.mu.Lock()
	s.server.FailoverSlot = on
	s.mu.Unlock()
	s.m.failoverSlot.Set(b2f(on))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
