package kinesis

import "time"

// A key is ready when its head record may go: it is then in its predicted
// shard's ready list, and the shard is in the loop's active list (it has
// tokens) or its blocked list (it waits for them). The ready counters
// decide when a batch is due.

// readyWeight is what a ready key adds to the ready counters: its head
// record, or with aggregation its whole queue.
func (l *loop) readyWeight(k *keyState) (int, int64) {
	if l.cfg.aggregating() {
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
	s := l.stream.shardOf(k)
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
		l.active = append(l.active, s)
	}
	n, b := l.readyWeight(k)
	if l.readyRecs == 0 {
		l.lingerStart = l.now
	}
	l.readyRecs += n
	l.readyBytes += b
	if urgent {
		l.urgent = true
	}
}

// unready removes k, the head of s's ready list.
func (l *loop) unready(s *shard, k *keyState) {
	n, b := l.readyWeight(k)
	l.readyRecs -= n
	l.readyBytes -= b
	s.readyHead = k.nextReady
	if s.readyHead == nil {
		s.readyTail = nil
	}
	s.readyN--
	k.nextReady = nil
	k.ready = false
	k.urgent = false
}

// unblockShards returns shards whose tokens have come back to the active list.
func (l *loop) unblockShards() {
	kept := l.blocked[:0]
	for _, s := range l.blocked {
		if s.blockedUntil.After(l.now) {
			kept = append(kept, s)
			continue
		}
		s.blockedUntil = time.Time{}
		if s.readyHead != nil && !s.active {
			s.active = true
			l.active = append(l.active, s)
			l.urgent = true // these records already waited
		}
	}
	clear(l.blocked[len(kept):])
	l.blocked = kept
}
