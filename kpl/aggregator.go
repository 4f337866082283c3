package kpl

import (
	"crypto/md5"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of AggregatedRecord and Record.
const (
	fieldPartitionKeyTable    protowire.Number = 1
	fieldExplicitHashKeyTable protowire.Number = 2
	fieldRecords              protowire.Number = 3

	fieldPartitionKeyIndex    protowire.Number = 1
	fieldExplicitHashKeyIndex protowire.Number = 2
	fieldData                 protowire.Number = 3
	fieldTags                 protowire.Number = 4

	fieldTagKey   protowire.Number = 1
	fieldTagValue protowire.Number = 2
)

// Aggregator builds one aggregated record at a time. Records are encoded as
// they are added, so [Aggregator.Bytes] only copies; after [Aggregator.Reset]
// the buffers and key tables are reused, and a warm Aggregator allocates
// nothing per record except when a table or buffer has to grow.
//
// The zero value is ready to use. An Aggregator is not safe for concurrent
// use.
type Aggregator struct {
	pkIndex  map[string]uint64
	pkTable  []string
	ehkIndex map[string]uint64
	ehkTable []string
	// tablesSize is the encoded size of both key tables.
	tablesSize int
	// records holds the encoded field-3 entries, in order.
	records []byte
	n       int
}

// Add appends a user record with the given partition key and data. The
// data is copied; the partition key is kept until [Aggregator.Reset].
// Kinesis wants partition keys of 1 to 256 Unicode characters: checking
// that is the caller's job, the format itself accepts any string.
func (a *Aggregator) Add(partitionKey string, data []byte) {
	a.AddWithHashKey(partitionKey, "", data)
}

// AddWithHashKey is [Aggregator.Add] with an explicit hash key for the user
// record (a decimal 128-bit integer, as in PutRecords). An empty
// explicitHashKey means none. The explicit hash key of the aggregate itself,
// which decides its shard, is the caller's choice when it puts the blob.
func (a *Aggregator) AddWithHashKey(partitionKey, explicitHashKey string, data []byte) {
	pk, ok := a.pkIndex[partitionKey]
	if !ok {
		if a.pkIndex == nil {
			a.pkIndex = make(map[string]uint64)
		}
		pk = uint64(len(a.pkTable))
		a.pkIndex[partitionKey] = pk
		a.pkTable = append(a.pkTable, partitionKey)
		a.tablesSize += tableEntrySize(partitionKey)
	}
	var ehk uint64
	hasEHK := explicitHashKey != ""
	if hasEHK {
		ehk, ok = a.ehkIndex[explicitHashKey]
		if !ok {
			if a.ehkIndex == nil {
				a.ehkIndex = make(map[string]uint64)
			}
			ehk = uint64(len(a.ehkTable))
			a.ehkIndex[explicitHashKey] = ehk
			a.ehkTable = append(a.ehkTable, explicitHashKey)
			a.tablesSize += tableEntrySize(explicitHashKey)
		}
	}

	inner := recordSize(pk, ehk, hasEHK, len(data))
	b := a.records
	b = protowire.AppendTag(b, fieldRecords, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	b = protowire.AppendTag(b, fieldPartitionKeyIndex, protowire.VarintType)
	b = protowire.AppendVarint(b, pk)
	if hasEHK {
		b = protowire.AppendTag(b, fieldExplicitHashKeyIndex, protowire.VarintType)
		b = protowire.AppendVarint(b, ehk)
	}
	b = protowire.AppendTag(b, fieldData, protowire.BytesType)
	b = protowire.AppendBytes(b, data)
	a.records = b
	a.n++
}

// Len returns the number of user records added since the last Reset.
func (a *Aggregator) Len() int { return a.n }

// Size returns the length in bytes of the aggregate that
// [Aggregator.Bytes] would append now, magic and digest included. An empty
// Aggregator has size [Overhead]. Kinesis counts the partition key the
// aggregate is put with against its record size limit too.
func (a *Aggregator) Size() int {
	return Overhead + a.tablesSize + len(a.records)
}

// SizeWith returns what [Aggregator.Size] would be after adding a record
// with this partition key, explicit hash key (empty for none) and data
// length, without adding it. With it a caller keeps an aggregate under a
// limit:
//
//	if agg.Len() > 0 && agg.SizeWith(pk, "", len(data)) > limit {
//		flush(agg.Bytes(buf[:0])); agg.Reset()
//	}
//	agg.Add(pk, data)
func (a *Aggregator) SizeWith(partitionKey, explicitHashKey string, dataLen int) int {
	size := a.Size()
	pk, ok := a.pkIndex[partitionKey]
	if !ok {
		pk = uint64(len(a.pkTable))
		size += tableEntrySize(partitionKey)
	}
	var ehk uint64
	hasEHK := explicitHashKey != ""
	if hasEHK {
		ehk, ok = a.ehkIndex[explicitHashKey]
		if !ok {
			ehk = uint64(len(a.ehkTable))
			size += tableEntrySize(explicitHashKey)
		}
	}
	inner := recordSize(pk, ehk, hasEHK, dataLen)
	return size + protowire.SizeTag(fieldRecords) + protowire.SizeBytes(inner)
}

// Fits reports whether a record with this partition key and data length
// can be added without the aggregate growing beyond limit bytes.
func (a *Aggregator) Fits(limit int, partitionKey string, dataLen int) bool {
	return a.SizeWith(partitionKey, "", dataLen) <= limit
}

// Bytes appends the finished aggregate (magic, message, MD5 digest) to dst
// and returns the extended slice. It does not reset the Aggregator.
func (a *Aggregator) Bytes(dst []byte) []byte {
	dst = slices.Grow(dst, a.Size())
	dst = append(dst, magic...)
	start := len(dst)
	for _, k := range a.pkTable {
		dst = protowire.AppendTag(dst, fieldPartitionKeyTable, protowire.BytesType)
		dst = protowire.AppendString(dst, k)
	}
	for _, k := range a.ehkTable {
		dst = protowire.AppendTag(dst, fieldExplicitHashKeyTable, protowire.BytesType)
		dst = protowire.AppendString(dst, k)
	}
	dst = append(dst, a.records...)
	sum := md5.Sum(dst[start:])
	return append(dst, sum[:]...)
}

// Reset empties the Aggregator and keeps its memory for the next aggregate.
func (a *Aggregator) Reset() {
	clear(a.pkIndex)
	clear(a.ehkIndex)
	// Drop the references so that keys of a past aggregate can be freed.
	clear(a.pkTable)
	clear(a.ehkTable)
	a.pkTable = a.pkTable[:0]
	a.ehkTable = a.ehkTable[:0]
	a.tablesSize = 0
	a.records = a.records[:0]
	a.n = 0
}

func tableEntrySize(s string) int {
	return protowire.SizeTag(fieldPartitionKeyTable) + protowire.SizeBytes(len(s))
}

// recordSize is the encoded length of a Record message's content.
func recordSize(pk, ehk uint64, hasEHK bool, dataLen int) int {
	n := protowire.SizeTag(fieldPartitionKeyIndex) + protowire.SizeVarint(pk)
	if hasEHK {
		n += protowire.SizeTag(fieldExplicitHashKeyIndex) + protowire.SizeVarint(ehk)
	}
	return n + protowire.SizeTag(fieldData) + protowire.SizeBytes(dataLen)
}
