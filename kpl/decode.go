package kpl

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// AppendDecode appends the user records of the aggregated record b to dst,
// in order, and returns the extended slice; with a reused dst, decoding
// allocates only the key strings.
//
// The records' Data alias b: copy them before b is changed or reused.
//
// It fails with [ErrNotAggregated] when ![IsAggregated](b), with
// [ErrChecksum] when the digest does not match, and with [ErrMalformed]
// when the message is not a valid AggregatedRecord. On error dst is
// returned unchanged. Tags are checked for shape and then ignored; unknown
// fields are skipped, as protobuf allows.
func AppendDecode(dst []UserRecord, b []byte) ([]UserRecord, error) {
	if !bytes.HasPrefix(b, []byte(magic)) {
		return dst, fmt.Errorf("%w: no magic number", ErrNotAggregated)
	}
	if len(b) < Overhead {
		return dst, fmt.Errorf("%w: %d bytes, shorter than magic and digest", ErrNotAggregated, len(b))
	}
	msg := b[magicLen : len(b)-digestLen]
	if sum := md5.Sum(msg); !bytes.Equal(sum[:], b[len(b)-digestLen:]) {
		return dst, ErrChecksum
	}

	// Fields may come in any order, so the tables are read before the
	// records are resolved against them.
	var pkTable, ehkTable []string
	records := 0
	for rest := msg; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return dst, malformed("field tag: %v", protowire.ParseError(n))
		}
		rest = rest[n:]
		switch num {
		case fieldPartitionKeyTable, fieldExplicitHashKeyTable, fieldRecords:
			if typ != protowire.BytesType {
				return dst, malformed("%s has wire type %d, want %d", topFieldName(num), typ, protowire.BytesType)
			}
			v, n := protowire.ConsumeBytes(rest)
			if n < 0 {
				return dst, malformed("%s: %v", topFieldName(num), protowire.ParseError(n))
			}
			rest = rest[n:]
			switch num {
			case fieldPartitionKeyTable:
				pkTable = append(pkTable, string(v))
			case fieldExplicitHashKeyTable:
				ehkTable = append(ehkTable, string(v))
			default:
				records++
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, rest)
			if n < 0 {
				return dst, malformed("field %d: %v", num, protowire.ParseError(n))
			}
			rest = rest[n:]
		}
	}

	out := slices.Grow(dst, records)
	for rest := msg; len(rest) > 0; {
		// The first pass validated the framing.
		num, typ, n := protowire.ConsumeTag(rest)
		rest = rest[n:]
		if num != fieldRecords {
			rest = rest[protowire.ConsumeFieldValue(num, typ, rest):]
			continue
		}
		v, n := protowire.ConsumeBytes(rest)
		rest = rest[n:]
		r, err := decodeRecord(v, pkTable, ehkTable)
		if err != nil {
			return dst, malformed("record %d: %v", len(out)-len(dst), err)
		}
		out = append(out, r)
	}
	return out, nil
}

func decodeRecord(b []byte, pkTable, ehkTable []string) (UserRecord, error) {
	var (
		r             UserRecord
		pk, ehk       uint64
		hasPK, hasEHK bool
		hasData       bool
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, fmt.Errorf("field tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		want := protowire.Type(-1)
		switch num {
		case fieldPartitionKeyIndex, fieldExplicitHashKeyIndex:
			want = protowire.VarintType
		case fieldData, fieldTags:
			want = protowire.BytesType
		}
		if want >= 0 && typ != want {
			return r, fmt.Errorf("%s has wire type %d, want %d", recordFieldName(num), typ, want)
		}
		switch num {
		case fieldPartitionKeyIndex, fieldExplicitHashKeyIndex:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return r, fmt.Errorf("%s: %v", recordFieldName(num), protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldPartitionKeyIndex {
				pk, hasPK = v, true
			} else {
				ehk, hasEHK = v, true
			}
		case fieldData, fieldTags:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return r, fmt.Errorf("%s: %v", recordFieldName(num), protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldData {
				r.Data, hasData = v, true
			} else if err := checkTag(v); err != nil {
				return r, err
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return r, fmt.Errorf("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if !hasPK {
		return r, errors.New("missing partition_key_index")
	}
	if !hasData {
		return r, errors.New("missing data")
	}
	if pk >= uint64(len(pkTable)) {
		return r, fmt.Errorf("partition key index %d out of range: table has %d entries", pk, len(pkTable))
	}
	r.PartitionKey = pkTable[pk]
	if hasEHK {
		if ehk >= uint64(len(ehkTable)) {
			return r, fmt.Errorf("explicit hash key index %d out of range: table has %d entries", ehk, len(ehkTable))
		}
		r.ExplicitHashKey = ehkTable[ehk]
	}
	return r, nil
}

// checkTag validates a Tag message, whose content is not used.
func checkTag(b []byte) error {
	hasKey := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			return fmt.Errorf("tag: %v", protowire.ParseError(n))
		}
		if (num == fieldTagKey || num == fieldTagValue) && typ != protowire.BytesType {
			return fmt.Errorf("tag field %d has wire type %d, want %d", num, typ, protowire.BytesType)
		}
		hasKey = hasKey || num == fieldTagKey
		b = b[n:]
	}
	if !hasKey {
		return errors.New("tag: missing key")
	}
	return nil
}

func topFieldName(num protowire.Number) string {
	switch num {
	case fieldPartitionKeyTable:
		return "partition_key_table (field 1)"
	case fieldExplicitHashKeyTable:
		return "explicit_hash_key_table (field 2)"
	case fieldRecords:
		return "records (field 3)"
	}
	return fmt.Sprintf("field %d", num)
}

func recordFieldName(num protowire.Number) string {
	switch num {
	case fieldPartitionKeyIndex:
		return "partition_key_index (field 1)"
	case fieldExplicitHashKeyIndex:
		return "explicit_hash_key_index (field 2)"
	case fieldData:
		return "data (field 3)"
	case fieldTags:
		return "tags (field 4)"
	}
	return fmt.Sprintf("field %d", num)
}
