package kpl

import (
	"errors"
	"os"
	"testing"
)

// FuzzDecode feeds each input (plain and compressed aggregates among the
// seeds) to Decode twice: as it is, and sealed with
// the magic and a valid digest, so the fuzzer reaches the protobuf parser
// instead of stopping at the checksum. Decode must not panic, must fail
// only with one of its sentinel errors, and what it accepts must survive a
// round trip through the Aggregator.
func FuzzDecode(f *testing.F) {
	if golden, err := os.ReadFile(goldenBlob); err == nil {
		f.Add(golden)
		f.Add(golden[magicLen : len(golden)-digestLen])
	}
	var c Compressor
	for _, tc := range roundTripCases[:8] {
		blob := aggregate(tc.recs)
		f.Add(blob)
		f.Add(blob[magicLen : len(blob)-digestLen])
		f.Add(c.Append(nil, blob))
	}
	f.Add([]byte{})
	f.Add([]byte(magic))
	f.Add(cat(str(1, "k"), record(varint(1, 0), str(3, "d"), msgField(fieldTags, str(1, "t")))))
	f.Add(cat(record(varint(1, 3), varint(2, 1), str(3, "d")), str(2, "h")))
	f.Add([]byte{0x2B, 0x08, 0x01, 0x2C}) // a group

	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, b)
		check(t, seal(b))
	})
}

func check(t *testing.T, b []byte) {
	recs, err := Decode(b)
	if err != nil {
		if !errors.Is(err, ErrNotAggregated) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Decode error %v matches no sentinel", err)
		}
		if errors.Is(err, ErrNotAggregated) != (!IsAggregated(b) && !IsCompressed(b)) {
			t.Fatalf("IsAggregated = %v, IsCompressed = %v but Decode error is %v", IsAggregated(b), IsCompressed(b), err)
		}
		if recs != nil {
			t.Fatalf("Decode returned %d records with error %v", len(recs), err)
		}
		return
	}
	if !IsAggregated(b) && !IsCompressed(b) {
		t.Fatalf("Decode accepted a blob that IsAggregated and IsCompressed reject")
	}
	again, err := Decode(aggregate(recs))
	if err != nil {
		t.Fatalf("Decode of our re-encoding: %v", err)
	}
	if d := diffRecords(recs, again); d != "" {
		t.Fatalf("re-encoding changed the records (-first +again):\n%s", d)
	}
}
