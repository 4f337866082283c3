// Package kpl reads and writes the Kinesis Producer Library's aggregated
// record format, which packs many user records into one Kinesis record.
//
// An aggregated record is the 4-byte magic F3 89 9A C2, a protobuf
// AggregatedRecord message, and the 16-byte MD5 digest of that message:
//
//	message AggregatedRecord {
//	  repeated string partition_key_table     = 1;
//	  repeated string explicit_hash_key_table = 2;
//	  repeated Record records                 = 3;
//	}
//	message Record {
//	  required uint64 partition_key_index     = 1;
//	  optional uint64 explicit_hash_key_index = 2;
//	  required bytes  data                    = 3;
//	  repeated Tag    tags                    = 4;
//	}
//	message Tag { required string key = 1; optional string value = 2; }
//
// A compressed aggregate is an aggregated record in one gzip member (RFC
// 1952): cdcbridge sends those with CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION
// =gzip. [Compressor] makes them; [Decode] and [Reader] read both forms.
// KCL and other KPL de-aggregators do not know this form: they must gunzip
// a record that starts with 1F 8B 08 before de-aggregating it.
//
// Guarantees:
//   - [Aggregator] writes records in the order they were added, and
//     [Decode] returns them in the order they were written, so per-key
//     order survives aggregation.
//   - [Aggregator.Size] is the exact length of what [Aggregator.Bytes]
//     appends, so a caller can keep a blob under the stream's record size
//     limit before encoding it.
//   - [Decode] never panics on any input, checks the digest before it
//     parses, and rejects malformed messages instead of guessing: a blob it
//     accepts holds exactly the user records the producer put in it.
//
// The package does no I/O and holds no global state.
package kpl

import (
	"bytes"
	"errors"
	"fmt"
)

// magic starts every aggregated record.
const magic = "\xF3\x89\x9A\xC2"

const (
	magicLen  = len(magic)
	digestLen = 16 // MD5

	// Overhead is what an aggregate adds around its protobuf message:
	// the magic number and the MD5 digest.
	Overhead = magicLen + digestLen
)

// Errors returned by [Decode], to be tested with [errors.Is].
var (
	// ErrNotAggregated: the blob does not start with the magic number or is
	// too short to hold it and a digest. Such a blob is a plain user record.
	ErrNotAggregated = errors.New("kpl: not an aggregated record")
	// ErrChecksum: the MD5 digest does not match the message; the blob was
	// corrupted or cut.
	ErrChecksum = errors.New("kpl: MD5 digest mismatch")
	// ErrMalformed: the digest matches but the message is not a valid
	// AggregatedRecord (truncated or invalid protobuf, missing required
	// field, table index out of range).
	ErrMalformed = errors.New("kpl: malformed aggregated record")
)

// UserRecord is one record inside an aggregate.
type UserRecord struct {
	PartitionKey string
	// ExplicitHashKey is empty when the record carries none.
	ExplicitHashKey string
	Data            []byte
}

// IsAggregated reports whether b has the shape of an aggregated record: the
// magic number followed by at least a digest's worth of bytes. Kinesis
// records for which it returns false are plain user records.
func IsAggregated(b []byte) bool {
	return len(b) >= Overhead && bytes.HasPrefix(b, []byte(magic))
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}
