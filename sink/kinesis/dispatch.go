package kinesis

import (
	"time"
)

// takeIntake moves the records Put since the last look into their tables
// and keys.
func (p *Producer) takeIntake() {
	l := &p.loop
	p.mu.Lock()
	in := p.intake
	p.intake = l.spare
	usedB, usedE := p.usedBytes, p.usedEvents
	p.mu.Unlock()
	if len(in) > 0 {
		p.m.inflightBytes.Set(float64(usedB))
		p.m.inflightEv.Set(float64(usedE))
	}
	for _, r := range in {
		p.admitTable(r)
	}
	clear(in)
	l.spare = in[:0]
}

// admitTable applies the truncate barrier of the record's table.
func (p *Producer) admitTable(r *record) {
	l := &p.loop
	if sub := r.subject; sub != "" {
		t := l.tables[sub]
		if t == nil {
			t = &tableState{name: sub}
			l.tables[sub] = t
		}
		r.table = t
		if !t.admit(r) {
			return
		}
	}
	p.enqueue(r)
}

// enqueue appends r to its key's queue; a key that was idle becomes ready.
func (p *Producer) enqueue(r *record) {
	l := &p.loop
	var k *keyState
	if p.cfg.Ordering == OrderingKey {
		k = l.keys[r.pk]
		if k == nil {
			k = p.newKey(r)
			l.keys[r.pk] = k
		}
	} else {
		k = p.newKey(r)
	}
	wasIdle := k.idle()
	k.push(r)
	switch {
	case wasIdle:
		p.makeReady(k, false)
	case k.ready && p.cfg.Aggregate:
		l.readyRecs++
		l.readyBytes += int64(r.size())
	}
}

func (p *Producer) newKey(r *record) *keyState {
	l := &p.loop
	var k *keyState
	if n := len(l.freeKeys); n > 0 {
		k = l.freeKeys[n-1]
		l.freeKeys[n-1] = nil
		l.freeKeys = l.freeKeys[:n-1]
	} else {
		k = new(keyState)
	}
	k.pk = r.pk
	k.hash = r.hash
	return k
}

// forgetKey drops an idle key.
func (p *Producer) forgetKey(k *keyState) {
	l := &p.loop
	if p.cfg.Ordering == OrderingKey {
		delete(l.keys, k.pk)
	}
	*k = keyState{}
	if len(l.freeKeys) < 4096 {
		l.freeKeys = append(l.freeKeys, k)
	}
}

// readyWeight is what a ready key adds to the ready counters: its head
// record, or with aggregation its whole queue.
func (p *Producer) readyWeight(k *keyState) (int, int64) {
	if p.cfg.Aggregate {
		return k.n, k.bytes
	}
	return 1, int64(k.head.size())
}

// makeReady appends k to its predicted shard's ready list. Urgent keys
// (a predecessor was just accepted, a retry is due) go out without
// waiting for the linger.
func (p *Producer) makeReady(k *keyState, urgent bool) {
	l := &p.loop
	if k.head == nil || k.ready {
		return
	}
	if k.shard == nil || k.mapVer != l.smap.version {
		k.shard = l.smap.predict(k.hash)
		k.mapVer = l.smap.version
	}
	s := k.shard
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
	n, b := p.readyWeight(k)
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
func (p *Producer) unready(s *shard, k *keyState) {
	l := &p.loop
	n, b := p.readyWeight(k)
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
func (p *Producer) unblockShards() {
	l := &p.loop
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

// dispatch sends batches while request slots are free and a batch is due:
// full, urgent, flushing, or lingered long enough.
func (p *Producer) dispatch() {
	l := &p.loop
	for l.fatal == nil {
		limit := p.cfg.MaxInFlight
		if l.reqFailures > 0 {
			limit = 1 // probe a failing endpoint with one request at a time
		}
		if l.inflight >= limit || l.gateUntil.After(l.now) {
			return
		}
		if len(l.pending) > 0 {
			b := l.pending[0]
			l.pending[0] = nil
			l.pending = l.pending[1:]
			p.send(b)
			continue
		}
		if l.readyRecs == 0 || len(l.active) == 0 {
			return
		}
		due := l.urgent || p.flushers.Load() > 0 || l.readyRecs >= maxRecordsPerRequest ||
			l.readyBytes >= int64(p.cfg.MaxRequestBytes) || l.now.Sub(l.lingerStart) >= p.cfg.Linger
		if !due {
			return
		}
		b := p.build()
		if b == nil {
			return
		}
		p.send(b)
		l.urgent = false
		l.lingerStart = l.now
	}
}

func (p *Producer) send(b *batch) {
	l := &p.loop
	l.inflight++
	b.sentAt = l.now
	p.m.batchRecords.Observe(float64(len(b.entries)))
	p.m.batchBytes.Observe(float64(b.bytes))
	p.sendCh <- b // capacity MaxInFlight: never blocks
}

// build fills one request from the active shards, round robin, within
// each shard's tokens. It returns nil when nothing could go.
func (p *Producer) build() *batch {
	l := &p.loop
	b := getBatch()
	n := len(l.active)
	start := l.cursor % max(n, 1)
	l.cursor++
	full := false
	for i := 0; i < n && !full && l.fatal == nil; i++ {
		s := l.active[(start+i)%n]
		full = p.fillFromShard(b, s)
	}
	// Compact the active list: drop drained and blocked shards.
	kept := l.active[:0]
	for _, s := range l.active {
		switch {
		case s.readyHead == nil:
			s.active = false
		case !s.blockedUntil.IsZero():
			s.active = false
			l.blocked = append(l.blocked, s)
		default:
			kept = append(kept, s)
		}
	}
	clear(l.active[len(kept):])
	l.active = kept
	if len(b.entries) == 0 {
		b.free()
		return nil
	}
	return b
}

// fillFromShard adds s's ready keys to b; it reports whether b is full.
func (p *Producer) fillFromShard(b *batch, s *shard) (full bool) {
	l := &p.loop
	recTok := s.recsLim.TokensAt(l.now)
	byteTok := s.bytesLim.TokensAt(l.now)
	usedR, usedB := 0, 0
	defer func() {
		if usedR > 0 {
			s.recsLim.ReserveN(l.now, usedR)
			s.bytesLim.ReserveN(l.now, usedB)
		}
	}()
	// fits reports whether the shard's tokens allow one more record of
	// size bytes; if not, the shard waits until they do.
	fits := func(size int) bool {
		if float64(usedR+1) <= recTok && float64(usedB+size) <= byteTok {
			return true
		}
		need := max((float64(usedB+size)-byteTok)/float64(s.bytesLim.Limit()), (float64(usedR+1)-recTok)/float64(s.recsLim.Limit()))
		wait := max(time.Duration(need*float64(time.Second)), 0) + time.Millisecond
		s.blockedUntil = l.now.Add(wait)
		p.m.throttleWaits.Inc()
		p.m.throttleWait.Add(wait.Seconds())
		return false
	}
	for s.readyHead != nil && l.fatal == nil {
		if len(b.entries) >= maxRecordsPerRequest {
			return true
		}
		k := s.readyHead
		r := k.head
		size := r.size()
		if size > l.recordLimit {
			p.unready(s, k)
			p.oversize(k, r)
			continue
		}
		room := p.cfg.MaxRequestBytes - b.bytes
		if p.cfg.Aggregate && !r.noAgg {
			// The head record as a one-record aggregate: exact size.
			if lone := l.emptyAgg.SizeWith(r.pk, "", len(r.buf)) + len(r.pk); lone <= l.aggMax {
				if lone > room {
					return true
				}
				if !fits(lone) {
					return false
				}
				if n, used := p.aggregate(b, s, min(l.aggMax, room, int(byteTok)-usedB)); n > 0 {
					usedR++
					usedB += used
					continue
				}
				// Not reached (it fits alone); send it plain.
			}
		}
		if size > room {
			return true
		}
		if !fits(size) {
			return false
		}
		p.unready(s, k)
		k.sent = 1
		b.addRecord(s, l.smap.version, r)
		usedR++
		usedB += size
	}
	return false
}
