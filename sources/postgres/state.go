package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// slotState is what the bridge keeps per slot in the checkpoint store. It
// is what tells a restart whether the slot it finds is the one it filled,
// whether its snapshot finished, and whether a missing slot is a first run
// or a loss.
type slotState struct {
	SystemID string `json:"system_id"`
	Database string `json:"database"`
	Slot     string `json:"slot"`
	// ConsistentPoint is the LSN the slot was created at ("X/X"); empty
	// while the slot is being created.
	ConsistentPoint string `json:"consistent_point"`
	// Snapshot is how the slot started: "initial" (existing rows read),
	// "never", or "adopted" (the slot existed before the bridge kept state
	// for it).
	Snapshot string `json:"snapshot"`
	// SnapshotComplete is true once the slot exists and its consistent
	// point is recorded: streaming starts there at once, and the rows are
	// read in chunks meanwhile (Snapshots). States written before chunked
	// snapshots set it only once the initial snapshot was acknowledged; a
	// restart that finds it false goes on with the existing slot.
	SnapshotComplete bool `json:"snapshot_complete"`
	// Snapshots are the snapshot jobs and their progress per table.
	Snapshots    []*snapshotJob `json:"snapshots,omitempty"`
	ConfirmedLSN string         `json:"confirmed_lsn,omitempty"`
	// SavedBeforeConfirm is set once ConfirmedLSN is saved before the
	// server is told (states written since that rule): the slot can then
	// never be ahead of ConfirmedLSN unless something else moved it.
	SavedBeforeConfirm bool `json:"saved_before_confirm,omitempty"`
	// Timeline is the server's timeline when the bridge last streamed: a
	// new one means the server was promoted (a failover) or restored.
	Timeline  int32  `json:"timeline,omitempty"`
	CreatedAt string `json:"created_at"`
}

// streamed reports whether the bridge has history with this slot: a loss
// of the slot is then a gap, not a first run.
func (st *slotState) streamed() bool {
	return st.SnapshotComplete && st.ConsistentPoint != ""
}

func stateKey(sysID, db, slot string) string {
	return "postgres/" + sysID + "/" + db + "/" + slot
}

// hex16 is the checkpoint position form of an LSN: it sorts as a string.
func hex16(lsn uint64) string {
	const digits = "0123456789ABCDEF"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[lsn&0xF]
		lsn >>= 4
	}
	return string(b[:])
}

func parseLSN(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	lsn, err := parseLSNText(s)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return lsn, nil
}

func parseLSNText(s string) (uint64, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			hi, err := strconv.ParseUint(s[:i], 16, 32)
			if err != nil {
				return 0, err
			}
			lo, err := strconv.ParseUint(s[i+1:], 16, 32)
			if err != nil {
				return 0, err
			}
			return hi<<32 | lo, nil
		}
	}
	return 0, errors.New("want X/X")
}

// stateStore loads and saves one slot's state.
type stateStore struct {
	store checkpoint.Store
	key   string
	// position is the last saved Position; it never moves backwards.
	position string
}

func (s *stateStore) load(ctx context.Context) (*slotState, error) {
	c, err := s.store.Load(ctx, s.key)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading checkpoint %s: %w", s.key, err)
	}
	var st slotState
	if err := json.Unmarshal(c.Data, &st); err != nil {
		return nil, fmt.Errorf("checkpoint %s: unreadable state: %w", s.key, err)
	}
	s.position = c.Position
	return &st, nil
}

// save stores st with Position = the larger of its confirmed LSN (or
// consistent point) and what was saved before.
func (s *stateStore) save(ctx context.Context, st *slotState) error {
	if st.CreatedAt == "" {
		st.CreatedAt = time.Now().UTC().Format(time.RFC3339)
	}
	lsn, _ := parseLSN(st.ConfirmedLSN)
	if lsn == 0 {
		lsn, _ = parseLSN(st.ConsistentPoint)
	}
	pos := hex16(lsn)
	if pos < s.position {
		pos = s.position
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := s.store.Save(ctx, s.key, checkpoint.Checkpoint{Position: pos, Data: data}); err != nil {
		return fmt.Errorf("saving checkpoint %s: %w", s.key, err)
	}
	s.position = pos
	return nil
}

func formatLSN(lsn uint64) string { return cdc.FormatLSN(lsn) }
