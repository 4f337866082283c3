package kinesis

import "fmt"

// oversize handles a record over the stream's limit: the producer stops
// (OversizeFail), or the record goes to the dead-letter directory and its
// key waits for the placeholder.
func (l *loop) oversize(k *keyState, r *record) {
	if l.cfg.Oversize == OversizeFail {
		l.fatal = fmt.Errorf("event %s (table %s): record of %d bytes (envelope plus partition key) exceeds the limit of %d bytes of stream %s (CDCBRIDGE_OVERSIZE=fail)",
			r.id, r.subject, r.size(), l.stream.recordLimit, l.label)
		return
	}
	if r.placeheld {
		l.fatal = fmt.Errorf("event %s (table %s): its dead-letter placeholder of %d bytes exceeds the limit of %d bytes of stream %s", r.id, r.subject, r.size(), l.stream.recordLimit, l.label)
		return
	}
	l.toDLQ(k, r, "oversize", fmt.Sprintf("record of %d bytes exceeds the stream's limit of %d bytes", r.size(), l.stream.recordLimit))
}

// toDLQ parks k while its head record is written to the dead-letter directory.
func (l *loop) toDLQ(k *keyState, r *record, reason, detail string) {
	k.parked = true
	l.dlq.enqueue(dlqJob{r: r, reason: reason, detail: detail, limit: l.stream.recordLimit})
}

// dlqDone swaps the dead-lettered record's envelope for its placeholder
// and lets its key go on.
func (l *loop) dlqDone(d dlqDone) {
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
	l.m.dlqRecords.WithLabelValues(d.job.reason).Inc()
	l.status.update(func(st *Status) { st.DLQRecords++ })
	l.log.Warn("event written to the dead-letter directory; a placeholder takes its place on the stream",
		"id", r.id, "table", r.subject, "reason", d.job.reason, "detail", d.job.detail, "dlq", d.ref)
	l.makeReady(k, true)
}
