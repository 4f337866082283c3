package kinesis

import (
	"iter"
	"time"
)

// A key is ready when its head record may go: it is then in its predicted
// shard's ready list, and the shard is in the active list (it has tokens)
// or the blocked list (it waits for them). The ready counters decide when
// a batch is due.

// readyLists are the shards with ready keys and what their keys weigh.
type readyLists struct {
	aggregating bool      // a ready key weighs its whole queue
	active      []*shard  // shards with ready keys and tokens
	cursor      int       // where the next request starts among the active shards
	blocked     []*shard  // shards with ready keys waiting for tokens
	recs        int       // ready records, by weight
	bytes       int64     // and their bytes
	lingerStart time.Time // the linger runs from here: the first ready record or the last request
	urgent      bool      // a ready key goes out without waiting for the linger
}

// weight is what a ready key adds to the ready counters: its head
// record, or with aggregation its whole queue.
func (q *readyLists) weight(k *keyState) (int, int64) {
	if q.aggregating {
		return k.n, k.bytes
	}
	return 1, int64(k.head.size())
}

// makeReady appends k to its predicted shard's ready list. Urgent keys
// (a predecessor was just accepted, a retry is due) go out without
// waiting for the linger.
func (l *loop) makeReady(k *keyState, urgent bool) {
	if k.head == nil || k.ready {
		return
	}
	l.ready.add(l.stream.shardOf(k), k, urgent, l.now)
}

// add appends k to s's ready list; s becomes active unless it waits for
// tokens.
func (q *readyLists) add(s *shard, k *keyState, urgent bool, now time.Time) {
	k.ready = true
	k.urgent = urgent
	k.nextReady = nil
	if s.readyTail == nil {
		s.readyHead = k
	} else {
		s.readyTail.nextReady = k
	}
	s.readyTail = k
	s.readyN++
	if !s.active && s.blockedUntil.IsZero() {
		s.active = true
		q.active = append(q.active, s)
	}
	n, b := q.weight(k)
	if q.recs == 0 {
		q.lingerStart = now
	}
	q.recs += n
	q.bytes += b
	if urgent {
		q.urgent = true
	}
}

// grow counts r, queued behind the head of a ready key: with aggregation
// it goes out with the key's run.
func (q *readyLists) grow(r *record) {
	if q.aggregating {
		q.recs++
		q.bytes += int64(r.size())
	}
}

// remove removes k, the head of s's ready list.
func (q *readyLists) remove(s *shard, k *keyState) {
	n, b := q.weight(k)
	q.recs -= n
	q.bytes -= b
	s.readyHead = k.nextReady
	if s.readyHead == nil {
		s.readyTail = nil
	}
	s.readyN--
	k.nextReady = nil
	k.ready = false
	k.urgent = false
}

// takeAll empties the ready lists of shards (those of a map being
// replaced) and returns their keys, no longer ready, shard by shard.
func (q *readyLists) takeAll(shards []*shard) []*keyState {
	var ready []*keyState
	for _, s := range shards {
		for k := s.readyHead; k != nil; {
			next := k.nextReady
			k.nextReady = nil
			k.ready = false
			ready = append(ready, k)
			k = next
		}
		s.readyHead, s.readyTail, s.readyN = nil, nil, 0
	}
	q.active = q.active[:0]
	q.blocked = q.blocked[:0]
	q.recs, q.bytes = 0, 0
	return ready
}

// sent notes a request sent: the next one lingers again.
func (q *readyLists) sent(now time.Time) {
	q.urgent = false
	q.lingerStart = now
}

// rotation yields each active shard once, starting one shard further at
// each call, so that requests are filled round robin.
func (q *readyLists) rotation() iter.Seq[*shard] {
	n := len(q.active)
	start := q.cursor % max(n, 1)
	q.cursor++
	return func(yield func(*shard) bool) {
		for i := range n {
			if !yield(q.active[(start+i)%n]) {
				return
			}
		}
	}
}

// compact drops drained and blocked shards from the active list; the
// blocked ones move to the blocked list.
func (q *readyLists) compact() {
	kept := q.active[:0]
	for _, s := range q.active {
		switch {
		case s.readyHead == nil:
			s.active = false
		case !s.blockedUntil.IsZero():
			s.active = false
			q.blocked = append(q.blocked, s)
		default:
			kept = append(kept, s)
		}
	}
	clear(q.active[len(kept):])
	q.active = kept
}

// unblock returns shards whose tokens have come back to the active list.
func (q *readyLists) unblock(now time.Time) {
	kept := q.blocked[:0]
	for _, s := range q.blocked {
		if s.blockedUntil.After(now) {
			kept = append(kept, s)
			continue
		}
		s.blockedUntil = time.Time{}
		if s.readyHead != nil && !s.active {
			s.active = true
			q.active = append(q.active, s)
			q.urgent = true // these records already waited
		}
	}
	clear(q.blocked[len(kept):])
	q.blocked = kept
}
