package kinesis

import "time"

// dispatch sends batches while request slots are free and a batch is due:
// full, urgent, flushing, or lingered long enough.
func (l *loop) dispatch() {
	for l.fatal == nil {
		if !l.reqs.open(l.now) {
			return
		}
		if b := l.reqs.next(); b != nil {
			l.send(b)
			continue
		}
		q := &l.ready
		if q.recs == 0 || len(q.active) == 0 {
			return
		}
		due := q.urgent || l.in.flushing() || q.recs >= maxRecordsPerRequest ||
			q.bytes >= int64(l.cfg.MaxRequestBytes) || l.now.Sub(q.lingerStart) >= l.cfg.Linger
		if !due {
			return
		}
		b := l.build()
		if b == nil {
			return
		}
		l.send(b)
		q.sent(l.now)
	}
}

// send hands b to a sender.
func (l *loop) send(b *batch) {
	l.reqs.sent()
	b.held = b.memory()
	l.in.hold(b.held)
	b.sentAt = l.now
	l.m.batchRecords.Observe(float64(len(b.entries)))
	l.m.batchBytes.Observe(float64(b.bytes))
	l.sendCh <- b // capacity MaxInFlight: never blocks
}

// build fills one request from the active shards, round robin, within
// each shard's tokens. It returns nil when nothing could go.
func (l *loop) build() *batch {
	b := getBatch()
	full := false
	for s := range l.ready.rotation() {
		if full || l.fatal != nil {
			break
		}
		full = l.fillFromShard(b, s)
	}
	l.ready.compact()
	if len(b.entries) == 0 {
		b.free()
		return nil
	}
	return b
}

// fillFromShard adds s's ready keys to b; it reports whether b is full.
func (l *loop) fillFromShard(b *batch, s *shard) (full bool) {
	recTok := s.recsLim.TokensAt(l.now)
	byteTok := s.bytesLim.TokensAt(l.now)
	usedR, usedB := 0, 0
	defer func() {
		if usedR > 0 {
			s.recsLim.ReserveN(l.now, usedR)
			// A compressed aggregate may take more than the tokens (and
			// the burst): the shard waits for the debt.
			for n := usedB; n > 0; n -= s.bytesLim.Burst() {
				s.bytesLim.ReserveN(l.now, min(n, s.bytesLim.Burst()))
			}
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
		l.m.throttleWaits.Inc()
		l.m.throttleWait.Add(wait.Seconds())
		return false
	}
	for s.readyHead != nil && l.fatal == nil {
		if len(b.entries) >= maxRecordsPerRequest {
			return true
		}
		k := s.readyHead
		r := k.head
		size := r.size()
		if size > l.stream.recordLimit {
			l.ready.remove(s, k)
			l.oversize(k, r)
			continue
		}
		room := l.cfg.MaxRequestBytes - b.bytes
		// Aggregate every record, or (hot) a key's run of two or more.
		if (l.cfg.Aggregate || l.cfg.AggregateHot && k.n > 1) && !r.noAgg {
			// The head record as a one-record aggregate: exact size.
			if lone := l.aggs.emptyAgg.SizeWith(r.pk, "", len(r.buf)) + len(r.pk); lone <= l.stream.aggMax {
				if lone > room {
					return true
				}
				if !fits(lone) {
					return false
				}
				if n, used := l.aggregate(b, s, min(l.stream.aggMax, room), int(byteTok)-usedB, l.cfg.AggregateHot); n > 0 {
					usedR++
					usedB += used
					continue
				}
				// Only a record too close to the limit to be compressed
				// within it gets here: it goes plain.
			}
		}
		if size > room {
			return true
		}
		if !fits(size) {
			return false
		}
		l.ready.remove(s, k)
		k.sent = 1
		b.addRecord(s, l.stream.version(), r)
		usedR++
		usedB += size
	}
	return false
}
