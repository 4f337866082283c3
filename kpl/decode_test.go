package kpl

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// Helpers that write protobuf fields by hand, for messages our Aggregator
// never produces.
func tagged(num protowire.Number, typ protowire.Type) []byte {
	return protowire.AppendTag(nil, num, typ)
}

func str(num protowire.Number, s string) []byte {
	return protowire.AppendString(tagged(num, protowire.BytesType), s)
}

func msgField(num protowire.Number, parts ...[]byte) []byte {
	return protowire.AppendBytes(tagged(num, protowire.BytesType), cat(parts...))
}

func varint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(tagged(num, protowire.VarintType), v)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func record(parts ...[]byte) []byte { return msgField(fieldRecords, parts...) }

func TestDecodeAcceptsValidVariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
		want []UserRecord
	}{
		{
			name: "tables after records",
			msg: cat(
				record(varint(1, 1), str(3, "x")),
				record(varint(1, 0), varint(2, 0), str(3, "y")),
				str(1, "pk0"), str(1, "pk1"), str(2, "ehk0"),
			),
			want: []UserRecord{
				{PartitionKey: "pk1", Data: []byte("x")},
				{PartitionKey: "pk0", ExplicitHashKey: "ehk0", Data: []byte("y")},
			},
		},
		{
			name: "record fields out of order",
			msg:  cat(str(1, "k"), record(str(3, "d"), varint(1, 0))),
			want: []UserRecord{{PartitionKey: "k", Data: []byte("d")}},
		},
		{
			name: "unknown fields skipped",
			msg: cat(
				varint(9, 7), str(1, "k"),
				protowire.AppendFixed32(tagged(15, protowire.Fixed32Type), 1),
				record(varint(1, 0), protowire.AppendFixed64(tagged(6, protowire.Fixed64Type), 2), str(3, "d")),
				protowire.AppendGroup(tagged(20, protowire.StartGroupType), 20, varint(1, 1)),
			),
			want: []UserRecord{{PartitionKey: "k", Data: []byte("d")}},
		},
		{
			name: "tags ignored",
			msg: cat(str(1, "k"), record(
				varint(1, 0), str(3, "d"),
				msgField(fieldTags, str(1, "key"), str(2, "value")),
				msgField(fieldTags, str(1, "key only")),
			)),
			want: []UserRecord{{PartitionKey: "k", Data: []byte("d")}},
		},
		{
			name: "later index field wins, as in protobuf",
			msg:  cat(str(1, "a"), str(1, "b"), record(varint(1, 0), varint(1, 1), str(3, "d"))),
			want: []UserRecord{{PartitionKey: "b", Data: []byte("d")}},
		},
		{
			name: "tables without records",
			msg:  cat(str(1, "a"), str(2, "1")),
			want: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(seal(tc.msg))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := diffRecords(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := aggregate([]UserRecord{{PartitionKey: "k", Data: []byte("v")}})
	badDigest := append([]byte(nil), valid...)
	badDigest[len(badDigest)-3] ^= 0xFF

	for _, tc := range []struct {
		name    string
		blob    []byte
		wantErr error
		wantMsg string
	}{
		{"empty", nil, ErrNotAggregated, "no magic"},
		{"plain json", []byte(`{"id":"1"}`), ErrNotAggregated, "no magic"},
		{"wrong magic", append([]byte{0, 0, 0, 0}, valid[magicLen:]...), ErrNotAggregated, "no magic"},
		{"too short for digest", valid[:Overhead-1], ErrNotAggregated, "shorter than magic and digest"},
		{"digest mismatch", badDigest, ErrChecksum, "MD5"},
		{"message changed", append(append([]byte(magic), 'x'), valid[magicLen:]...), ErrChecksum, "MD5"},

		{"truncated tag", seal([]byte{0x80}), ErrMalformed, "unexpected EOF"},
		{"field number zero", seal([]byte{0x02, 0x00}), ErrMalformed, "field tag"},
		{"length past end", seal(protowire.AppendVarint(tagged(1, protowire.BytesType), 10)), ErrMalformed, "partition_key_table (field 1): unexpected EOF"},
		{"table with wrong wire type", seal(varint(1, 5)), ErrMalformed, "partition_key_table (field 1) has wire type 0"},
		{"records with wrong wire type", seal(varint(3, 5)), ErrMalformed, "records (field 3) has wire type 0"},
		{"unknown field with reserved wire type", seal([]byte{0x2E}), ErrMalformed, "field 5"},
		{"stray end group", seal(tagged(5, protowire.EndGroupType)), ErrMalformed, "field 5"},
		{"unterminated group", seal(cat(tagged(5, protowire.StartGroupType), varint(1, 1))), ErrMalformed, "field 5"},
		{"truncated record", seal(cat(str(1, "k"), record(varint(1, 0), []byte{0x1A, 0x05, 'a'}))), ErrMalformed, "record 0: "},
		{"record index with wrong wire type", seal(cat(str(1, "k"), record(str(1, "0"), str(3, "d")))), ErrMalformed, "partition_key_index (field 1) has wire type 2"},
		{"record data with wrong wire type", seal(cat(str(1, "k"), record(varint(1, 0), varint(3, 1)))), ErrMalformed, "data (field 3) has wire type 0"},
		{"missing partition key index", seal(cat(str(1, "k"), record(str(3, "d")))), ErrMalformed, "missing partition_key_index"},
		{"missing data", seal(cat(str(1, "k"), record(varint(1, 0)))), ErrMalformed, "missing data"},
		{"partition key index out of range", seal(cat(str(1, "k"), record(varint(1, 0), str(3, "d")), record(varint(1, 1), str(3, "d")))), ErrMalformed, "kpl: malformed aggregated record: record 1: partition key index 1 out of range: table has 1 entries"},
		{"no partition key table", seal(record(varint(1, 0), str(3, "d"))), ErrMalformed, "partition key index 0 out of range"},
		{"huge partition key index", seal(cat(str(1, "k"), record(varint(1, 1<<63), str(3, "d")))), ErrMalformed, "out of range"},
		{"explicit hash key index out of range", seal(cat(str(1, "k"), str(2, "1"), record(varint(1, 0), varint(2, 1), str(3, "d")))), ErrMalformed, "explicit hash key index 1 out of range: table has 1 entries"},
		{"tag without key", seal(cat(str(1, "k"), record(varint(1, 0), str(3, "d"), msgField(fieldTags, str(2, "v"))))), ErrMalformed, "tag: missing key"},
		{"tag key with wrong wire type", seal(cat(str(1, "k"), record(varint(1, 0), str(3, "d"), msgField(fieldTags, varint(1, 1))))), ErrMalformed, "tag field 1 has wire type 0"},
		{"tag truncated", seal(cat(str(1, "k"), record(varint(1, 0), str(3, "d"), msgField(fieldTags, []byte{0x0A, 0x09})))), ErrMalformed, "tag: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.blob)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Decode = %d records, %v; want %v", len(got), err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
			if got != nil {
				t.Errorf("records returned with an error: %v", got)
			}
		})
	}
}
