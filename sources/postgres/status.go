package postgres

import (
	"slices"
)

// Status is the source's state for the daemon's /status endpoint.
type Status struct {
	Role          string            `json:"role"` // active, standby or stopped
	Slot          string            `json:"slot"`
	Publications  []string          `json:"publications,omitempty"`
	SystemID      string            `json:"system_id,omitempty"`
	Database      string            `json:"database,omitempty"`
	ConfirmedLSN  string            `json:"confirmed_lsn,omitempty"`
	SlotLagBytes  *int64            `json:"slot_lag_bytes,omitempty"`
	PendingEvents int               `json:"pending_events"`
	Snapshot      *snapshotProgress `json:"snapshot,omitempty"`
	Degraded      []string          `json:"degraded"`
}

// Status returns a snapshot of the source's state (JSON-marshalable).
func (s *Source) Status() any {
	s.mu.Lock()
	st := Status{
		Role: s.role, Slot: s.cfg.Slot, Publications: slices.Clone(s.pubs),
		SystemID: s.sysID, Database: s.database, Degraded: []string{},
	}
	if s.lagKnown {
		lag := s.slotLag
		st.SlotLagBytes = &lag
	}
	if s.snap != nil {
		p := *s.snap
		st.Snapshot = &p
	}
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
