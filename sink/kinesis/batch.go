package kinesis

import (
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/cdcbridge/cdcbridge/kpl"
)

// batch is one PutRecords request and, once done, its outcome.
type batch struct {
	entries []types.PutRecordsRequestEntry
	info    []entry
	recs    []*record // the records of all entries, entry by entry
	bytes   int
	held    int64 // charged to the budget while in flight: body and aggregates

	sentAt time.Time
	dur    time.Duration
	err    error
	res    []entryResult
}

// entry describes one request entry: a record, or an aggregate of recs.
type entry struct {
	shard      *shard // predicted
	mapVer     uint64
	first, end int // recs[first:end]
	aggregated bool
	blob       []byte // the aggregate's buffer
}

type entryResult struct {
	shardID, code, msg string
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

func getBatch() *batch { return batchPool.Get().(*batch) }

// free returns the batch and its aggregate buffers to their pools. The
// records are not its to free.
func (b *batch) free() {
	for i := range b.info {
		if b.info[i].blob != nil {
			putBuf(b.info[i].blob)
		}
	}
	clear(b.entries)
	clear(b.info)
	clear(b.recs)
	clear(b.res)
	*b = batch{entries: b.entries[:0], info: b.info[:0], recs: b.recs[:0], res: b.res[:0]}
	batchPool.Put(b)
}

func (b *batch) addRecord(s *shard, ver uint64, r *record) {
	b.info = append(b.info, entry{shard: s, mapVer: ver, first: len(b.recs), end: len(b.recs) + 1})
	b.recs = append(b.recs, r)
	b.entries = append(b.entries, types.PutRecordsRequestEntry{Data: r.buf, PartitionKey: &r.pk})
	b.bytes += r.size()
}

// addAggregate adds an entry for the records appended to b.recs since first.
func (b *batch) addAggregate(s *shard, ver uint64, first int, blob []byte, pk *string) {
	b.info = append(b.info, entry{shard: s, mapVer: ver, first: first, end: len(b.recs), aggregated: true, blob: blob})
	b.entries = append(b.entries, types.PutRecordsRequestEntry{Data: blob, PartitionKey: pk, ExplicitHashKey: &s.startKey})
	b.bytes += len(blob) + len(*pk)
}

// split returns the two halves of a multi-entry batch (to isolate an
// invalid record); the halves own copies of their entries, and their
// aggregates are packed again by pack.
func (b *batch) split(pack func(*kpl.Aggregator) []byte) (*batch, *batch) {
	h := len(b.info) / 2
	return b.sub(0, h, pack), b.sub(h, len(b.info), pack)
}

func (b *batch) sub(from, to int, pack func(*kpl.Aggregator) []byte) *batch {
	n := getBatch()
	var agg kpl.Aggregator
	for i := from; i < to; i++ {
		e := b.info[i]
		first := len(n.recs)
		recs := b.recs[e.first:e.end]
		n.recs = append(n.recs, recs...)
		e.end = len(n.recs)
		e.first = first
		entry := b.entries[i]
		if e.aggregated {
			// The blob was dropped once the request body held it: make
			// it again from the same records, in the same order.
			agg.Reset()
			for _, r := range recs {
				agg.Add(r.pk, r.buf)
			}
			e.blob = pack(&agg)
			entry.Data = e.blob
		}
		n.info = append(n.info, e)
		n.entries = append(n.entries, entry)
		n.bytes += len(entry.Data) + len(aws.ToString(entry.PartitionKey))
	}
	return n
}

// memory is what the request holds beyond its records while in flight:
// its body and, until the body is written, its aggregates.
func (b *batch) memory() int64 {
	n := int64(bodySize(b))
	for i := range b.info {
		n += int64(len(b.info[i].blob))
	}
	return n
}

// dropBlobs returns the aggregates' buffers once the request body is
// written, so an aggregate is not held twice while the request runs.
func (b *batch) dropBlobs() {
	for i := range b.info {
		if blob := b.info[i].blob; blob != nil {
			putBuf(blob)
			b.info[i].blob = nil
			b.entries[i].Data = nil
		}
	}
}
