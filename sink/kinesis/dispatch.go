package kinesis

import (
	"fmt"
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

// aggregate builds one aggregate from s's ready keys, at most capBytes
// (partition key included), and adds it to b. It returns the user records
// taken and the entry's size.
func (p *Producer) aggregate(b *batch, s *shard, capBytes int) (int, int) {
	l := &p.loop
	a := &l.agg
	a.Reset()
	first := len(b.recs)
	var aggPK *string
	for s.readyHead != nil {
		k := s.readyHead
		take := 0
		for r := k.head; r != nil; r = r.next {
			if r.noAgg || r.size() > l.recordLimit {
				break
			}
			pkLen := len(r.pk)
			if aggPK != nil {
				pkLen = len(*aggPK)
			}
			if a.SizeWith(r.pk, "", len(r.buf))+pkLen > capBytes {
				break
			}
			if aggPK == nil {
				aggPK = &r.pk
			}
			a.Add(r.pk, r.buf)
			b.recs = append(b.recs, r)
			take++
		}
		if take == 0 {
			break
		}
		p.unready(s, k)
		k.sent = take
		if take < k.n {
			break // the aggregate is full
		}
	}
	n := a.Len()
	switch n {
	case 0:
		return 0, 0
	case 1:
		r := b.recs[first]
		b.recs = b.recs[:first]
		b.addRecord(s, l.smap.version, r)
		return 1, r.size()
	}
	blob := a.Bytes(getBuf(a.Size()))
	b.addAggregate(s, l.smap.version, first, blob, aggPK)
	p.m.userPerAgg.Observe(float64(n))
	return n, len(blob) + len(*aggPK)
}

// oversize handles a record over the stream's limit: the producer stops
// (OversizeFail), or the record goes to the dead-letter directory and its
// key waits for the placeholder.
func (p *Producer) oversize(k *keyState, r *record) {
	l := &p.loop
	if p.cfg.Oversize == OversizeFail {
		l.fatal = fmt.Errorf("event %s (table %s): record of %d bytes (envelope plus partition key) exceeds the limit of %d bytes of stream %s (CDCBRIDGE_OVERSIZE=fail)",
			r.id, r.subject, r.size(), l.recordLimit, p.label)
		return
	}
	if r.placeheld {
		l.fatal = fmt.Errorf("event %s (table %s): its dead-letter placeholder of %d bytes exceeds the limit of %d bytes of stream %s", r.id, r.subject, r.size(), l.recordLimit, p.label)
		return
	}
	p.toDLQ(k, r, "oversize", fmt.Sprintf("record of %d bytes exceeds the stream's limit of %d bytes", r.size(), l.recordLimit))
}

// toDLQ parks k while its head record is written to the dead-letter directory.
func (p *Producer) toDLQ(k *keyState, r *record, reason, detail string) {
	k.parked = true
	p.dlq.enqueue(dlqJob{r: r, reason: reason, detail: detail, limit: p.loop.recordLimit})
}

// dlqDone swaps the dead-lettered record's envelope for its placeholder
// and lets its key go on.
func (p *Producer) dlqDone(d dlqDone) {
	l := &p.loop
	r := d.job.r
	if d.err != nil {
		l.fatal = d.err
		return
	}
	k := r.key
	k.bytes -= int64(r.size())
	putBuf(r.buf)
	r.buf = d.buf
	r.placeheld = true
	r.noAgg = true
	k.bytes += int64(r.size())
	k.parked = false
	p.m.dlqRecords.WithLabelValues(d.job.reason).Inc()
	p.status.update(func(st *Status) { st.DLQRecords++ })
	p.log.Warn("event written to the dead-letter directory; a placeholder takes its place on the stream",
		"id", r.id, "table", r.subject, "reason", d.job.reason, "detail", d.job.detail, "dlq", d.ref)
	p.makeReady(k, true)
}
