package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// saver keeps the slot's state in the checkpoint store for one session:
// the position that is safe to confirm, about once a second when it
// moved, once more when the session ends, and whenever the receiver is
// about to send its last status update. The server is told only what was
// saved (see positions), so the final save must come first: a graceful
// stop then leaves the slot exactly where the store says.
//
// A store that reports the checkpoint stale (another owner wrote it) ends
// the session: the state is reloaded before streaming again. Saves that
// keep failing for CheckpointFailureLimit end it with a fatal error: a
// bridge that cannot keep its state must say so rather than run on
// degraded indefinitely.
type saver struct {
	src   *Source
	st    *stateStore
	state *slotState
	pos   *positions
	stop  context.CancelCauseFunc

	snaps *snapshots // the snapshot jobs kept with the state (nil: none)

	mu           sync.Mutex // a save at a time: the session's end races the ticker
	saved        uint64
	savedJobs    uint64 // the snapshot jobs' version last saved
	failingSince time.Time
}

func (v *saver) loop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			v.save(ctx)
		case <-ctx.Done():
			v.saveWithin(10 * time.Second)
			return
		}
	}
}

// saveWithin saves, giving the store at most d: for the session's end,
// whose context is already over.
func (v *saver) saveWithin(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	v.save(ctx)
}

func (v *saver) save(ctx context.Context) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.src
	cur := v.pos.advance()
	// The jobs are read after the position: a snapshot request decoded
	// before a position is then saved with it, so it is never confirmed
	// away unsaved.
	var jobsVersion uint64
	if v.snaps != nil {
		v.state.Snapshots, jobsVersion = v.snaps.export()
	}
	if cur == v.saved && v.state.SavedBeforeConfirm && jobsVersion == v.savedJobs {
		return
	}
	v.state.ConfirmedLSN = formatLSN(cur)
	v.state.SavedBeforeConfirm = true
	if err := v.st.save(ctx, v.state); err != nil {
		if errors.Is(err, checkpoint.ErrStale) {
			s.log.Error("the checkpoint store holds a newer position for this slot: another instance wrote it; restarting the session", "err", err)
			v.stop(err)
			return
		}
		s.degrade("checkpoint saves failing")
		if v.failingSince.IsZero() {
			v.failingSince = time.Now()
		}
		if limit := s.cfg.CheckpointFailureLimit; time.Since(v.failingSince) >= limit && ctx.Err() == nil {
			v.stop(fatal(fmt.Errorf("the checkpoint store could not save the slot's state for %v (CDCBRIDGE_CHECKPOINT_STORE): %w", limit, err)))
			return
		}
		s.log.Warn("saving the checkpoint", "err", err)
		return
	}
	v.failingSince = time.Time{}
	v.saved = cur
	v.savedJobs = jobsVersion
	v.pos.markSaved(cur)
}
