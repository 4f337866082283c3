package kinesis

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/sink/kinesis/hashkey"
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
// loop needs of the event. It normalises e.PartitionKey first (see
// partitionKey), so that the envelope carries the key the record is put
// with.
func newRecord(e *cdc.Event) (*record, error) {
	pk := partitionKey(e)
	if pk != e.PartitionKey {
		e.PartitionKey = pk
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

// partitionKey returns the Kinesis partition key for e: its own when
// valid; a key over 256 bytes replaced by its hashed form (the table part
// kept, cut to fit); an empty one replaced by the table's key or, without
// a table, the source's. Invalid UTF-8 is replaced as the envelope encoder
// does, so the key Kinesis hashes is the one the envelope carries.
func partitionKey(e *cdc.Event) string {
	pk := e.PartitionKey
	if !utf8.ValidString(pk) {
		pk = strings.ToValidUTF8(pk, "\uFFFD")
	}
	if pk == "" {
		switch {
		case e.Subject != "":
			return cdc.TablePartitionKey(e.Subject)
		case e.Source != "":
			return hashedKey("source", e.Source)
		default:
			return "cdcbridge:*"
		}
	}
	if len(pk) > cdc.MaxPartitionKeyBytes {
		table := e.Subject
		if table == "" {
			if i := strings.IndexByte(pk, ':'); i > 0 {
				table = pk[:i]
			}
		}
		return hashedKey(table, pk)
	}
	return pk
}

func hashedKey(table, full string) string {
	sum := sha256.Sum256([]byte(full))
	return cdc.HashedPartitionKey(table, hex.EncodeToString(sum[:16]))
}

func freeRecord(r *record) {
	putBuf(r.buf)
	*r = record{}
	recordPool.Put(r)
}
