package verify

// The verifier's own reading of the KPL aggregated-record format, written
// from the format's description (amazon-kinesis-producer's
// aggregation-format.md), independently of kpl:
//
//	record    = magic (F3 89 9A C2) || protobuf AggregatedRecord || MD5(protobuf)
//	AggregatedRecord {
//	  repeated string partition_key_table     = 1;
//	  repeated string explicit_hash_key_table = 2;
//	  repeated Record records                 = 3;
//	}
//	Record {
//	  required uint64 partition_key_index     = 1;
//	  optional uint64 explicit_hash_key_index = 2;
//	  required bytes  data                    = 3;
//	  repeated Tag    tags                    = 4;   // Tag { required string key = 1; optional string value = 2; }
//	}

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

var aggMagic = []byte{0xF3, 0x89, 0x9A, 0xC2}

// aggUser is one user record of an aggregate.
type aggUser struct {
	PartitionKey    string
	ExplicitHashKey string // empty when the record names none
	Data            []byte
}

// isAggregate reports whether b starts with the aggregate magic. A
// consumer library treats such a record as an aggregate; one that then
// fails to decode is an error, not user data.
func isAggregate(b []byte) bool {
	return len(b) >= len(aggMagic) && bytes.Equal(b[:len(aggMagic)], aggMagic)
}

// A compressed aggregate (CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip) is
// one gzip member (RFC 1952) holding an aggregated record.
func isGzip(b []byte) bool { return len(b) >= 3 && b[0] == 0x1F && b[1] == 0x8B && b[2] == 0x08 }

// gunzip inflates one gzip member, at most 16 MiB, with nothing after it.
func gunzip(b []byte) ([]byte, error) {
	const limit = 16 << 20
	br := bytes.NewReader(b)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	zr.Multistream(false)
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("gzip: %w", err)
	case len(out) > limit:
		return nil, fmt.Errorf("gzip: inflates to more than %d bytes", limit)
	case br.Len() > 0:
		return nil, fmt.Errorf("gzip: %d bytes after the member", br.Len())
	}
	return out, nil
}

// deaggregate returns the user records of an aggregated record.
func deaggregate(b []byte) ([]aggUser, error) {
	if !isAggregate(b) {
		return nil, errors.New("kpl: no aggregate magic")
	}
	if len(b) < len(aggMagic)+md5.Size {
		return nil, fmt.Errorf("kpl: aggregate of %d bytes is shorter than magic and digest", len(b))
	}
	msg := b[len(aggMagic) : len(b)-md5.Size]
	sum := md5.Sum(msg)
	if !bytes.Equal(sum[:], b[len(b)-md5.Size:]) {
		return nil, errors.New("kpl: MD5 digest does not match the protobuf message")
	}
	var pks, ehks []string
	type rec struct {
		pk, ehk      uint64
		hasPK, hasEH bool
		data         []byte
		hasData      bool
	}
	var recs []rec
	err := eachField(msg, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil // unknown scalar fields are skipped, as protobuf does
		}
		switch num {
		case 1:
			pks = append(pks, string(v))
		case 2:
			ehks = append(ehks, string(v))
		case 3:
			var r rec
			err := eachField(v, func(num protowire.Number, typ protowire.Type, fv []byte) error {
				switch {
				case num == 1 && typ == protowire.VarintType:
					r.pk, r.hasPK = varint(fv), true
				case num == 2 && typ == protowire.VarintType:
					r.ehk, r.hasEH = varint(fv), true
				case num == 3 && typ == protowire.BytesType:
					r.data, r.hasData = fv, true
				case num == 4 && typ == protowire.BytesType:
					return checkTag(fv)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("record %d: %w", len(recs), err)
			}
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kpl: %w", err)
	}
	if len(recs) == 0 {
		return nil, errors.New("kpl: aggregate holds no records")
	}
	out := make([]aggUser, len(recs))
	for i, r := range recs {
		switch {
		case !r.hasPK:
			return nil, fmt.Errorf("kpl: record %d lacks the required partition_key_index", i)
		case !r.hasData:
			return nil, fmt.Errorf("kpl: record %d lacks the required data", i)
		case r.pk >= uint64(len(pks)):
			return nil, fmt.Errorf("kpl: record %d: partition_key_index %d outside a table of %d", i, r.pk, len(pks))
		case r.hasEH && r.ehk >= uint64(len(ehks)):
			return nil, fmt.Errorf("kpl: record %d: explicit_hash_key_index %d outside a table of %d", i, r.ehk, len(ehks))
		}
		out[i] = aggUser{PartitionKey: pks[r.pk], Data: r.data}
		if r.hasEH {
			out[i].ExplicitHashKey = ehks[r.ehk]
		}
	}
	return out, nil
}

// eachField calls fn for every field of a protobuf message. For varints v
// holds the encoded varint; for length-delimited fields, the bytes.
func eachField(b []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		switch typ {
		case protowire.BytesType:
			val, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(m))
			}
			v, n = val, m
		case protowire.VarintType:
			_, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(m))
			}
			v, n = b[:m], m
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(m))
			}
			n = m
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func varint(b []byte) uint64 {
	v, _ := protowire.ConsumeVarint(b)
	return v
}

// checkTag checks a Tag message: its key is required.
func checkTag(b []byte) error {
	hasKey := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, _ []byte) error {
		if num == 1 && typ == protowire.BytesType {
			hasKey = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	if !hasKey {
		return errors.New("tag without its required key")
	}
	return nil
}
