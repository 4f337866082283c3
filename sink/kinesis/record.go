package kinesis

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// record is one event on its way: its envelope, encoded once by Put, and
// the bookkeeping of its key, table and budget. Only the run loop touches a
// record after Put handed it over.
type record struct {
	ack     func() // the event's OnAck
	id      string
	subject string
	buf     []byte // the envelope, from a size-class pool (or the placeholder's)
	pk      string
	hash    hashKey
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

func newRecord() *record { return recordPool.Get().(*record) }

func freeRecord(r *record) {
	putBuf(r.buf)
	*r = record{}
	recordPool.Put(r)
}

// Envelope buffers come in size classes 1.5 times apart, from 256 bytes
// to 96 KiB, so that a record's budget charge (its buffer's capacity) is
// within 50% of its size; larger envelopes get exact buffers that are not
// pooled. Put encodes into a pooled scratch buffer and copies the result
// into its class, so the charge never depends on a size guess.
var bufClasses = func() []int {
	var c []int
	for n := 256; n <= 64<<10; n *= 2 {
		c = append(c, n, n*3/2)
	}
	return c
}()

var bufPools = make([]sync.Pool, len(bufClasses))

func classOf(size int) int {
	for i, c := range bufClasses {
		if size <= c {
			return i
		}
	}
	return -1
}

func getBuf(size int) []byte {
	i := classOf(size)
	if i < 0 {
		return make([]byte, 0, size)
	}
	if b, ok := bufPools[i].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, bufClasses[i])
}

func putBuf(b []byte) {
	i := classOf(cap(b))
	if i < 0 || bufClasses[i] != cap(b) {
		return
	}
	b = b[:0]
	bufPools[i].Put(&b)
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// encode returns e's envelope in a buffer of its size class.
func encode(e *cdc.Event) ([]byte, error) {
	sp := scratchPool.Get().(*[]byte)
	enc, err := cdc.AppendEncode((*sp)[:0], e)
	if err != nil {
		scratchPool.Put(sp)
		return nil, err
	}
	buf := append(getBuf(len(enc)), enc...)
	if cap(enc) <= 1<<20 {
		*sp = enc[:0]
		scratchPool.Put(sp)
	}
	return buf, nil
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
