package kinesis

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/hashkey"
)

// record is one event on its way: its envelope, encoded once by Put, and
// the bookkeeping of its key, table and budget. Once Put has queued it, a
// record belongs to the loop; a sender reads its envelope and key while
// their batch is in flight, the dead-letter writer while its job is
// queued.
type record struct {
	ack     func() // the event's OnAck
	id      string
	subject string
	buf     []byte // the envelope, from a size-class pool (or the placeholder's)
	pk      string
	hash    hashkey.Key
	cost    int64  // budget charged by Put
	epoch   uint64 // flush epoch at Put

	key   *keyState
	table *tableState
	next  *record // next record of the key

	attempts  int // failed attempts, for the backoff
	placeheld bool
	noAgg     bool // send alone: it was part of an aggregate Kinesis rejected
	truncate  bool
}

// size is what Kinesis counts against the record limit.
func (r *record) size() int { return len(r.buf) + len(r.pk) }

// recordOverhead approximates what a record costs beyond its envelope:
// the record and key state, map entries and request entry.
const recordOverhead = 256

var recordPool = sync.Pool{New: func() any { return new(record) }}

// newRecord makes e's record: its envelope, encoded once, and what the
// loop needs of the event. The partition key is e's own, as the source
// built it (cdc.PartitionKey): a key Kinesis would refuse, or one that the
// envelope would carry differently, is an error.
func newRecord(e *cdc.Event) (*record, error) {
	pk := e.PartitionKey
	if err := checkPartitionKey(e); err != nil {
		return nil, err
	}
	buf, err := encode(e)
	if err != nil {
		return nil, err
	}
	r := recordPool.Get().(*record)
	r.ack = e.OnAck
	r.id = e.ID
	r.subject = e.Subject
	r.buf = buf
	r.pk = pk
	r.hash = hashkey.Of(pk)
	r.truncate = e.Op == cdc.OpTruncate
	r.cost = int64(cap(buf)) + int64(len(pk)) + recordOverhead
	return r, nil
}

// checkPartitionKey refuses a key Kinesis would reject (empty, over 256
// bytes) or that the envelope would not carry as it is (not UTF-8: the
// encoder replaces what is not).
func checkPartitionKey(e *cdc.Event) error {
	pk := e.PartitionKey
	switch {
	case pk == "":
		return fmt.Errorf("event %s (table %s) has no partition key", e.ID, e.Subject)
	case len(pk) > cdc.MaxPartitionKeyBytes:
		return fmt.Errorf("event %s (table %s): partition key of %d bytes exceeds Kinesis's %d (cdc.PartitionKey hashes longer keys)",
			e.ID, e.Subject, len(pk), cdc.MaxPartitionKeyBytes)
	case !utf8.ValidString(pk):
		return fmt.Errorf("event %s (table %s): partition key is not valid UTF-8", e.ID, e.Subject)
	}
	return nil
}

func freeRecord(r *record) {
	putBuf(r.buf)
	*r = record{}
	recordPool.Put(r)
}
