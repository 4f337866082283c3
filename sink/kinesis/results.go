package kinesis

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// handleResult applies a finished request: accepted entries are acked at
// once, failed entries wait for their backoff at the head of their key,
// failed requests are retried or split.
func (l *loop) handleResult(ctx context.Context, b *batch) {
	l.inflight--
	l.in.unhold(b.held)
	b.held = 0
	l.m.putDuration.Observe(b.dur.Seconds())
	if ctx.Err() != nil {
		return // shutting down: abandoned, never acked
	}
	if b.err != nil {
		l.requestFailed(b)
		return
	}
	if l.reqFailures > 0 {
		l.log.Info("kinesis requests succeed again", "after_failures", l.reqFailures)
		l.reqFailures = 0
		l.status.update(func(st *Status) { st.FailingRequests = 0 })
	}
	l.gateUntil = l.now
	failed, aggs, aggRecs := 0, 0, 0
	for i := range b.info {
		e := &b.info[i]
		res := &b.res[i]
		if res.code != "" {
			failed++
			l.entryFailed(b, e, res)
			continue
		}
		if res.shardID != e.shard.id && l.stream.sum.distribution != types.RecordDistributionStrategyAuto {
			l.mismatch(e, res.shardID)
			if e.aggregated {
				// KCL would drop the user records whose hash keys are
				// outside the shard it landed in: put it again, regrouped
				// by the refreshed map, its keys blocked meanwhile.
				l.reput(b, e)
				continue
			}
		}
		if e.aggregated {
			aggs++
			aggRecs += e.end - e.first
		}
		l.entryOK(b, e)
	}
	if aggs > 0 {
		l.status.update(func(st *Status) {
			st.Aggregates += int64(aggs)
			st.AggregatedRecords += int64(aggRecs)
		})
	}
	if failed > 0 {
		l.m.requests.WithLabelValues("partial").Inc()
	} else {
		l.m.requests.WithLabelValues("ok").Inc()
	}
	l.finishAcks()
	b.free()
}

// entryOK acknowledges an accepted entry's records and lets their keys go on.
func (l *loop) entryOK(b *batch, e *entry) {
	for _, r := range b.recs[e.first:e.end] {
		k := r.key
		k.pop()
		k.sent--
		l.acked = append(l.acked, r)
		if t := r.table; t != nil {
			l.keys.tableDone(t, r, l.enqueue)
		}
		if k.sent == 0 {
			if k.head != nil {
				l.makeReady(k, true)
			} else if k.idle() {
				l.keys.forget(k)
			}
		}
	}
}

// finishAcks calls Ack for the accepted events, then returns their budget
// (so that Flush, which waits for the budget, sees the Acks done).
func (l *loop) finishAcks() {
	if len(l.acked) == 0 {
		return
	}
	for _, r := range l.acked {
		if r.ack != nil {
			r.ack()
		}
	}
	l.m.delivered.Add(float64(len(l.acked)))
	l.status.update(func(st *Status) { st.Delivered += int64(len(l.acked)) })
	usedB, usedE := l.in.release(l.acked)
	l.m.inflightBytes.Set(float64(usedB))
	l.m.inflightEv.Set(float64(usedE))
	for i, r := range l.acked {
		freeRecord(r)
		l.acked[i] = nil
	}
	l.acked = l.acked[:0]
}

// releaseKeys marks an entry's keys as no longer in flight and calls f
// once per key with the key's first record of the entry.
func (l *loop) releaseKeys(b *batch, e *entry, f func(k *keyState, head *record)) {
	var last *keyState
	for _, r := range b.recs[e.first:e.end] {
		if r.key == last {
			continue
		}
		last = r.key
		last.sent = 0
		f(last, r)
	}
}

// entryFailed schedules the entry's keys for a retry after their backoff.
func (l *loop) entryFailed(b *batch, e *entry, res *entryResult) {
	l.m.failedRecords.WithLabelValues(codeLabel(res.code)).Inc()
	l.m.retries.Inc()
	if res.code == "ProvisionedThroughputExceededException" || classify(apiCodeError(res.code)) == classThrottle {
		l.status.update(func(st *Status) {
			st.ThrottledEntries++
			st.LastThrottleAt = l.now
		})
		// The shard is busier than planned (another writer, a hot
		// shard): charge its bucket again for the throttled record, so the
		// whole shard slows down in proportion, not only the throttled key.
		if l.stream.current(e.mapVer) {
			e.shard.recsLim.ReserveN(l.now, 1)
		}
	}
	l.releaseKeys(b, e, func(k *keyState, head *record) {
		head.attempts++
		l.scheduleRetry(k, head.attempts)
	})
}

// requestFailed handles a request that failed as a whole.
func (l *loop) requestFailed(b *batch) {
	code := errorCode(b.err)
	class := classify(b.err)
	l.m.requests.WithLabelValues(resultLabel(class, code)).Inc()
	switch class {
	case classFatal:
		l.fatal = streamError(l.label, "PutRecords", b.err)
		b.free()
		return
	case classInvalid:
		l.bisect(b)
		return
	case classExpired:
		invalidateCredentials(l.client)
	}
	l.reqFailures++
	l.gateUntil = l.now.Add(l.retry.Delay(l.reqFailures))
	msg := fmt.Sprintf("%d records: %v", len(b.recs), b.err)
	l.status.update(func(st *Status) {
		st.LastError = msg
		st.LastErrorAt = l.now
		st.FailingRequests = l.reqFailures
		if class == classThrottle {
			st.LastThrottleAt = l.now
		}
	})
	if (l.reqFailures == 1 && l.now.Sub(l.lastWarn) > 10*time.Second) || l.reqFailures%20 == 0 {
		l.lastWarn = l.now
		l.log.Warn("PutRecords failed; retrying", "records", len(b.recs), "failures", l.reqFailures, "code", code, "err", b.err)
	}
	l.m.retries.Add(float64(len(b.info)))
	l.m.failedRecords.WithLabelValues(codeLabel(code)).Add(float64(len(b.info)))
	for i := range b.info {
		l.releaseKeys(b, &b.info[i], func(k *keyState, _ *record) { l.makeReady(k, true) })
	}
	b.free()
}

// bisect splits a request rejected as invalid until the offending record
// is alone; that record goes to the dead-letter directory and the others
// go on. A rejected aggregate is taken apart and its records sent alone.
func (l *loop) bisect(b *batch) {
	if len(b.info) > 1 {
		x, y := b.split(l.aggs.pack)
		l.pending = append([]*batch{x, y}, l.pending...)
		b.free()
		return
	}
	e := &b.info[0]
	recs := b.recs[e.first:e.end]
	if len(recs) > 1 {
		for _, r := range recs {
			r.noAgg = true
		}
		l.releaseKeys(b, e, func(k *keyState, _ *record) { l.makeReady(k, true) })
		b.free()
		return
	}
	r := recs[0]
	k := r.key
	k.sent = 0
	b.free()
	switch {
	case r.placeheld:
		l.fatal = fmt.Errorf("stream %s rejected the dead-letter placeholder of event %s (table %s) as invalid", l.label, r.id, r.subject)
	case l.cfg.Oversize == OversizeFail:
		l.fatal = fmt.Errorf("stream %s rejected event %s (table %s) as invalid (CDCBRIDGE_OVERSIZE=fail)", l.label, r.id, r.subject)
	default:
		l.toDLQ(k, r, "invalid", "Kinesis rejected the record as invalid")
	}
}

// mismatch notes a put result in another shard than predicted: the map
// is stale (a split or merge happened), unless it changed since.
func (l *loop) mismatch(e *entry, got string) {
	if l.stream.current(e.mapVer) {
		l.status.setTrouble("mismatch", "shard map stale: records landed in "+got+", not "+e.shard.id+"; reloading")
		l.requestRefresh()
	}
}

// reput parks an aggregate's keys until the refreshed map is installed
// (or, when a newer map is already here, makes them ready at once).
func (l *loop) reput(b *batch, e *entry) {
	l.m.retries.Inc()
	stale := l.stream.current(e.mapVer)
	l.releaseKeys(b, e, func(k *keyState, _ *record) {
		if stale {
			l.stream.park(k)
		} else {
			l.makeReady(k, true)
		}
	})
	if stale {
		l.requestRefresh()
	}
}
