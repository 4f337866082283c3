package kinesis

import (
	"container/heap"
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

// requests is the loop's account of PutRecords requests: how many are in
// flight, the gate that holds the next one back after a failed request,
// the keys waiting to retry a failed entry, the halves of a rejected
// request that go first, and the records a result accepted.
type requests struct {
	retry       backoff.Backoff // only Delay is used: counts are per key and per request
	maxInFlight int             // MaxInFlight

	retrying  retryHeap // keys waiting for their backoff
	inflight  int
	gateUntil time.Time // no request before then (a failed request's backoff)
	failures  int       // consecutive failed requests
	lastWarn  time.Time
	pending   []*batch // halves of a rejected batch, sent first
	acked     []*record
}

// slots is how many requests may be in flight: one at a time to probe an
// endpoint whose requests fail.
func (q *requests) slots() int {
	if q.failures > 0 {
		return 1
	}
	return q.maxInFlight
}

// open reports whether a request may go now: a slot is free and no
// failed request's backoff holds it back.
func (q *requests) open(now time.Time) bool {
	return q.inflight < q.slots() && !q.gateUntil.After(now)
}

func (q *requests) sent() { q.inflight++ }

func (q *requests) done() { q.inflight-- }

// succeeded notes a request that did not fail as a whole; it returns how
// many requests had failed in a row before it.
func (q *requests) succeeded(now time.Time) (failedBefore int) {
	failedBefore = q.failures
	q.failures = 0
	q.gateUntil = now
	return failedBefore
}

// failed notes a request that failed as a whole: the next one waits for
// the backoff, and requests go one at a time until one succeeds. It
// reports whether to warn: at the first failure after a quiet while, then
// at every 20th.
func (q *requests) failed(now time.Time) (warn bool) {
	q.failures++
	q.gateUntil = now.Add(q.retry.Delay(q.failures))
	if (q.failures == 1 && now.Sub(q.lastWarn) > 10*time.Second) || q.failures%20 == 0 {
		q.lastWarn = now
		return true
	}
	return false
}

// retryAfter puts k in the retry heap until the backoff of its head
// record's attempts ends.
func (q *requests) retryAfter(k *keyState, attempts int, now time.Time) {
	k.retryAt = now.Add(q.retry.Delay(attempts))
	k.inRetry = true
	heap.Push(&q.retrying, k)
}

// due takes a key whose backoff has ended from the retry heap; nil when
// none has.
func (q *requests) due(now time.Time) *keyState {
	if len(q.retrying) == 0 || q.retrying[0].retryAt.After(now) {
		return nil
	}
	k := heap.Pop(&q.retrying).(*keyState)
	k.inRetry = false
	return k
}

// first queues the halves of a rejected batch ahead of every other request.
func (q *requests) first(x, y *batch) {
	q.pending = append([]*batch{x, y}, q.pending...)
}

// next takes the first queued half of a rejected batch; nil when none waits.
func (q *requests) next() *batch {
	if len(q.pending) == 0 {
		return nil
	}
	b := q.pending[0]
	q.pending[0] = nil
	q.pending = q.pending[1:]
	return b
}

// ack notes r accepted; finishAcks acknowledges it.
func (q *requests) ack(r *record) { q.acked = append(q.acked, r) }

// acksDone forgets the acknowledged records.
func (q *requests) acksDone() {
	clear(q.acked)
	q.acked = q.acked[:0]
}

// handleResult applies a finished request: accepted entries are acked at
// once, failed entries wait for their backoff at the head of their key,
// failed requests are retried or split.
func (l *loop) handleResult(ctx context.Context, b *batch) {
	l.reqs.done()
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
	if n := l.reqs.succeeded(l.now); n > 0 {
		l.log.Info("kinesis requests succeed again", "after_failures", n)
		l.status.update(func(st *Status) { st.FailingRequests = 0 })
	}
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
		l.reqs.ack(r)
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
	acked := l.reqs.acked
	if len(acked) == 0 {
		return
	}
	for _, r := range acked {
		if r.ack != nil {
			r.ack()
		}
	}
	l.m.delivered.Add(float64(len(acked)))
	l.status.update(func(st *Status) { st.Delivered += int64(len(acked)) })
	usedB, usedE := l.in.release(acked)
	l.m.inflightBytes.Set(float64(usedB))
	l.m.inflightEv.Set(float64(usedE))
	for _, r := range acked {
		freeRecord(r)
	}
	l.reqs.acksDone()
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
		l.reqs.retryAfter(k, head.attempts, l.now)
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
	warn := l.reqs.failed(l.now)
	msg := fmt.Sprintf("%d records: %v", len(b.recs), b.err)
	l.status.update(func(st *Status) {
		st.LastError = msg
		st.LastErrorAt = l.now
		st.FailingRequests = l.reqs.failures
		if class == classThrottle {
			st.LastThrottleAt = l.now
		}
	})
	if warn {
		l.log.Warn("PutRecords failed; retrying", "records", len(b.recs), "failures", l.reqs.failures, "code", code, "err", b.err)
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
		l.reqs.first(x, y)
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
