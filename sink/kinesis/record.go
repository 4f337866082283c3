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
	ev    *cdc.Event
	buf   []byte // the envelope, from bufPool (or the placeholder's)
	pk    string
	hash  hashKey
	cost  int64  // budget charged by Put
	epoch uint64 // flush epoch at Put

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

// Envelope buffers come in power-of-two classes from 512 bytes to 64 KiB,
// so that a record's budget charge (its buffer's capacity) stays close to
// its size; larger envelopes get exact buffers that are not pooled.
const (
	minBufClass = 9  // 512 B
	maxBufClass = 16 // 64 KiB
)

var bufPools [maxBufClass + 1]sync.Pool

func getBuf(size int) []byte {
	c := minBufClass
	for c <= maxBufClass && 1<<c < size {
		c++
	}
	if c > maxBufClass {
		return make([]byte, 0, size)
	}
	if b, ok := bufPools[c].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, 1<<c)
}

func putBuf(b []byte) {
	n := cap(b)
	if n < 1<<minBufClass || n > 1<<maxBufClass || n&(n-1) != 0 {
		return
	}
	c := 0
	for 1<<c < n {
		c++
	}
	b = b[:0]
	bufPools[c].Put(&b)
}

// estimateSize guesses an event's envelope size so the first buffer fits.
func estimateSize(e *cdc.Event) int {
	n := 400 + len(e.ID) + len(e.Source) + len(e.Subject) + 2*len(e.PartitionKey) + len(e.Sequence) +
		len(e.Key) + len(e.Before) + len(e.After)
	for _, c := range e.UnchangedToast {
		n += len(c) + 3
	}
	if e.Message != nil {
		n += len(e.Message.Prefix) + len(e.Message.Content)*4/3 + 64
	}
	return n
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
