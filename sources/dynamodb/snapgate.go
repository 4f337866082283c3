package dynamodb

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// The hand-off between a load and the stream. A scanned item must never be
// delivered after a newer stream record of its key, and should not be
// followed by an older one. Each page read by a load is therefore held
// until the stream has caught up with the time the page was read, and
// then its items are delivered one by one, each only if no stream record
// of its key was emitted since the page's Scan request was sent.
//
// Why that is enough: a write made after the Scan read an item comes after
// the request was sent, so the stream reader that emits its record does so
// after that moment. The reader notes the key (with the time on this
// machine's clock) before it emits the record, under the same lock the
// page holds while it checks a key and emits the item. So either the item
// went first (its write is older than the write whose record follows), or
// the note is seen and the item is dropped: the stream carries that key's
// newer versions, and every change of the key since the stream position
// the load started from, so its last record leaves the key as the table has
// it. Dropping the item of a key noted for an older write is equally safe.
//
// The hold makes reads and stream records meet in order: once every shard
// passed the page's read time, the records of writes made before the read
// have been emitted (a key noted for such a write drops the item, or the
// record went before the item), so an item is not followed by an older
// version of its key from the stream either. A shard counts as having
// passed time T (this machine's clock) when one of these holds:
//   - its reader emitted a record whose ApproximateCreationDateTime (rounded
//     down to the second by DynamoDB) is at or after T + margin;
//   - it answered a GetRecords request sent at or after T + margin with
//     fewer records than the request's limit and a next iterator, and the
//     reader emitted them: the answer reached the shard's end as it was
//     when the request arrived. margin (Config.SnapshotMargin, default 2s)
//     covers the delay before a write shows in its stream, the rounding
//     of creation times and the skew between DynamoDB's clock and ours.
//     An empty answer before that is no evidence;
//   - it was read to its end (closed) and its children are known, or a full
//     listing of the stream sent after T + margin showed none.
//
// A shard that waits for its parent, or is not read yet, has not passed
// anything: pages wait for it. Split shards are therefore tracked too: a
// child that appears while pages are held holds them until it is read to
// the time too.

// recentKeys are the keys the stream emitted while a load runs, with the
// time each was last noted.
type recentKeys struct {
	mu     sync.Mutex   // also held by a page while it checks and emits an item
	active atomic.Int32 // loads running; changed with mu held
	seen   map[string]time.Time
}

// note records that the stream is about to emit a record of key.
func (r *recentKeys) note(key string) {
	if r.active.Load() == 0 {
		// No load: nothing to note. A load that starts now requests its
		// pages later, and holds them until this record was emitted.
		return
	}
	r.mu.Lock()
	if r.active.Load() > 0 {
		r.seen[key] = time.Now()
	}
	r.mu.Unlock()
}

func (r *recentKeys) start() {
	r.mu.Lock()
	if r.active.Load() == 0 {
		r.seen = map[string]time.Time{}
	}
	r.active.Add(1)
	r.mu.Unlock()
}

func (r *recentKeys) stop() {
	r.mu.Lock()
	if r.active.Add(-1) == 0 {
		r.seen = nil
	}
	r.mu.Unlock()
}

// forget drops keys noted before t: no page in flight was requested before
// it.
func (r *recentKeys) forget(t time.Time) {
	r.mu.Lock()
	for k, at := range r.seen {
		if at.Before(t) {
			delete(r.seen, k)
		}
	}
	r.mu.Unlock()
}

// seenSince reports whether key was noted at or after t. Called with mu
// held.
func (r *recentKeys) seenSince(key string, t time.Time) bool {
	at, ok := r.seen[key]
	return ok && !at.Before(t)
}

// loadIdleInterval is the most a shard reader waits after an empty read
// while a load runs: pages wait for every shard's next answer.
const loadIdleInterval = 250 * time.Millisecond

// idleInterval is how long a shard reader waits after an empty read.
func (s *Source) idleInterval() time.Duration {
	if s.recent.active.Load() > 0 {
		return min(s.cfg.IdleInterval, loadIdleInterval)
	}
	return s.cfg.IdleInterval
}

// streamPassed reports whether every shard of the stream has passed t (see
// above).
func (s *Source) streamPassed(t time.Time) bool {
	if !s.ready.Load() {
		return false
	}
	at := t.Add(s.cfg.SnapshotMargin)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sh := range s.shards {
		switch sh.state {
		case stateFinished:
			if s.lastListing.Before(at) && !s.hasChildren(sh.id) {
				return false
			}
		case stateReading:
			if !sh.passed(at) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// hasChildren reports whether a shard of the tree has id as parent. Called
// with s.mu held.
func (s *Source) hasChildren(id string) bool {
	for _, sh := range s.shards {
		if sh.parent == id {
			return true
		}
	}
	return false
}

// passed reports whether the shard's reader has emitted everything written
// before at (see above).
func (sh *shard) passed(at time.Time) bool {
	if n := sh.emittedCreated.Load(); n != 0 && !time.Unix(0, n).Before(at) {
		return true
	}
	n := sh.tipAt.Load()
	return n != 0 && !time.Unix(0, n).Before(at)
}

// streamOpened reports whether every shard being read has its first
// iterator: a shard started at LATEST takes its position then, and a load
// must not read anything before the stream's position is taken.
func (s *Source) streamOpened() bool {
	if !s.ready.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sh := range s.shards {
		if sh.state == stateReading && !sh.opened.Load() {
			return false
		}
	}
	return true
}

// waitStream polls cond until it holds or ctx ends.
func waitStream(ctx context.Context, cond func() bool) error {
	if cond() {
		return nil
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if cond() {
				return nil
			}
		}
	}
}

// streamPosition is the lowest sequence number the shards being read have
// emitted last (their checkpoint before they emitted anything in this run;
// noPosition for none). An item's shard has emitted up to at least it, and
// emits its later records above it. With one shard (DynamoDB Local, small
// tables) it is that shard's position; with several, a consumer may find a
// read's sequence below an earlier record of its key (the read then
// repeats the state that record left, so dropping it costs nothing).
func (s *Source) streamPosition() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	pos := ""
	for _, sh := range s.shards {
		if sh.state != stateReading {
			continue
		}
		p := noPosition
		if v := sh.lastRead.Load(); v != nil && *v != "" {
			p = *v
		} else if v := sh.savedView.Load(); v != nil && *v != "" && *v != FinishedPosition {
			p = *v
		}
		if pos == "" || p < pos {
			pos = p
		}
	}
	if pos == "" {
		return noPosition
	}
	return pos
}
