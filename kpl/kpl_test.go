package kpl

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
)

// seal wraps a protobuf message into an aggregated record with a valid
// digest, so tests can reach the parser with any message.
func seal(msg []byte) []byte {
	sum := md5.Sum(msg)
	b := append([]byte(magic), msg...)
	return append(b, sum[:]...)
}

func aggregate(recs []UserRecord) []byte {
	var a Aggregator
	for _, r := range recs {
		a.AddWithHashKey(r.PartitionKey, r.ExplicitHashKey, r.Data)
	}
	return a.Bytes(nil)
}

// diffRecords compares records with bytes.Equal for Data: cmp's
// element-wise walk is slow on megabytes, and nil equals empty.
func diffRecords(want, got []UserRecord) string {
	return cmp.Diff(want, got, cmp.Comparer(bytes.Equal))
}

func manyRecords(n, keys int) []UserRecord {
	recs := make([]UserRecord, n)
	for i := range recs {
		recs[i] = UserRecord{
			PartitionKey: fmt.Sprintf("public.orders:[%d]", i%keys),
			Data:         []byte(fmt.Sprintf(`{"id":%d,"payload":%q}`, i, strings.Repeat("x", i%300))),
		}
	}
	return recs
}

func binaryData() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

var roundTripCases = []struct {
	name string
	recs []UserRecord
}{
	{"no records", nil},
	{"one record", []UserRecord{{PartitionKey: "k", Data: []byte("v")}}},
	{"empty data", []UserRecord{{PartitionKey: "k", Data: nil}, {PartitionKey: "k", Data: []byte{}}}},
	{"empty partition key", []UserRecord{{PartitionKey: "", Data: []byte("v")}}},
	{"unicode keys", []UserRecord{
		{PartitionKey: "public.commandes:[\"été\"]", Data: []byte("1")},
		{PartitionKey: "日本語:[\"キー\"]", Data: []byte("2")},
		{PartitionKey: "emoji:[\"🦫\"]", Data: []byte("3")},
		{PartitionKey: "public.commandes:[\"été\"]", Data: []byte("4")},
	}},
	{"binary data", []UserRecord{{PartitionKey: "bin", Data: binaryData()}}},
	{"repeated keys keep order", []UserRecord{
		{PartitionKey: "a", Data: []byte("1")},
		{PartitionKey: "b", Data: []byte("2")},
		{PartitionKey: "a", Data: []byte("3")},
		{PartitionKey: "a", Data: []byte("4")},
		{PartitionKey: "b", Data: []byte("5")},
	}},
	{"explicit hash keys", []UserRecord{
		{PartitionKey: "a", ExplicitHashKey: "0", Data: []byte("1")},
		{PartitionKey: "b", Data: []byte("2")},
		{PartitionKey: "c", ExplicitHashKey: "340282366920938463463374607431768211455", Data: []byte("3")},
		{PartitionKey: "a", ExplicitHashKey: "0", Data: []byte("4")},
	}},
	{"large record", []UserRecord{{PartitionKey: "big", Data: bytes.Repeat([]byte("z"), 3<<20)}}},
	{"many records, indexes past one varint byte", manyRecords(2000, 700)},
}

func TestRoundTrip(t *testing.T) {
	var reused Aggregator
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			reused.Reset()
			for i, r := range tc.recs {
				predicted := reused.SizeWith(r.PartitionKey, r.ExplicitHashKey, len(r.Data))
				reused.AddWithHashKey(r.PartitionKey, r.ExplicitHashKey, r.Data)
				if got := reused.Size(); got != predicted {
					t.Fatalf("record %d: Size() = %d after add, SizeWith predicted %d", i, got, predicted)
				}
			}
			if reused.Len() != len(tc.recs) {
				t.Errorf("Len() = %d, want %d", reused.Len(), len(tc.recs))
			}

			prefix := []byte("prefix")
			out := reused.Bytes(append([]byte(nil), prefix...))
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("Bytes overwrote dst's content")
			}
			blob := out[len(prefix):]
			if len(blob) != reused.Size() {
				t.Errorf("len(Bytes) = %d, Size() = %d", len(blob), reused.Size())
			}
			if fresh := aggregate(tc.recs); !bytes.Equal(fresh, blob) {
				t.Errorf("a reset Aggregator wrote other bytes than a new one")
			}
			if !IsAggregated(blob) {
				t.Errorf("IsAggregated(blob) = false")
			}

			got, err := Decode(blob)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := diffRecords(tc.recs, got); d != "" {
				t.Errorf("Decode mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestPartitionKeyTableDeduplicated(t *testing.T) {
	var a Aggregator
	for i := range 100 {
		a.Add("same", []byte{byte(i)})
	}
	a.AddWithHashKey("same", "42", nil)
	a.AddWithHashKey("other", "42", nil)
	msg := a.Bytes(nil)[magicLen : a.Size()-digestLen]
	var pks, ehks []string
	for len(msg) > 0 {
		num, _, n := protowire.ConsumeTag(msg)
		msg = msg[n:]
		v, n := protowire.ConsumeBytes(msg)
		msg = msg[n:]
		switch num {
		case fieldPartitionKeyTable:
			pks = append(pks, string(v))
		case fieldExplicitHashKeyTable:
			ehks = append(ehks, string(v))
		}
	}
	if d := cmp.Diff([]string{"same", "other"}, pks); d != "" {
		t.Errorf("partition key table (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"42"}, ehks); d != "" {
		t.Errorf("explicit hash key table (-want +got):\n%s", d)
	}
}

func TestAddCopiesData(t *testing.T) {
	var a Aggregator
	data := []byte("before")
	a.Add("k", data)
	copy(data, "AFTER!")
	got, err := Decode(a.Bytes(nil))
	if err != nil {
		t.Fatal(err)
	}
	if string(got[0].Data) != "before" {
		t.Errorf("Data = %q: Add kept a reference to the caller's slice", got[0].Data)
	}
}

func TestFits(t *testing.T) {
	const limit = 1000
	var a Aggregator
	data := make([]byte, 90)
	for a.Fits(limit, fmt.Sprintf("key-%d", a.Len()%3), len(data)) {
		a.Add(fmt.Sprintf("key-%d", a.Len()%3), data)
	}
	if a.Size() > limit {
		t.Fatalf("Size() = %d after adding while Fits, limit %d", a.Size(), limit)
	}
	if got := a.SizeWith(fmt.Sprintf("key-%d", a.Len()%3), "", len(data)); got <= limit {
		t.Fatalf("Fits said no but SizeWith = %d <= %d", got, limit)
	}
	if n := len(a.Bytes(nil)); n > limit {
		t.Fatalf("aggregate is %d bytes, limit %d", n, limit)
	}
}

func TestEmptyAggregator(t *testing.T) {
	var a Aggregator
	if a.Size() != Overhead {
		t.Errorf("Size() = %d, want %d", a.Size(), Overhead)
	}
	blob := a.Bytes(nil)
	if len(blob) != Overhead {
		t.Errorf("len(Bytes) = %d, want %d", len(blob), Overhead)
	}
	recs, err := Decode(blob)
	if err != nil || len(recs) != 0 {
		t.Errorf("Decode = %v, %v; want no records", recs, err)
	}
}

func TestAppendDecodeReusesAndKeepsDst(t *testing.T) {
	blob := aggregate([]UserRecord{{PartitionKey: "a", Data: []byte("1")}, {PartitionKey: "b", Data: []byte("2")}})
	dst := []UserRecord{{PartitionKey: "earlier"}}
	got, err := AppendDecode(dst, blob)
	if err != nil {
		t.Fatal(err)
	}
	want := []UserRecord{{PartitionKey: "earlier"}, {PartitionKey: "a", Data: []byte("1")}, {PartitionKey: "b", Data: []byte("2")}}
	if d := diffRecords(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	bad := append([]byte(nil), blob...)
	bad[len(bad)-1] ^= 1
	if got, err := AppendDecode(dst, bad); err == nil || len(got) != len(dst) {
		t.Errorf("AppendDecode(bad) = %d records, %v; want dst back and an error", len(got), err)
	}
}

func TestIsAggregated(t *testing.T) {
	valid := aggregate(nil)
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"nil", nil, false},
		{"json", []byte(`{"specversion":"1.0"}`), false},
		{"magic only", []byte(magic), false},
		{"one short of a digest", valid[:Overhead-1], false},
		{"empty aggregate", valid, true},
		{"other magic", append([]byte{0xF3, 0x89, 0x9A, 0xC3}, valid[magicLen:]...), false},
	} {
		if got := IsAggregated(tc.b); got != tc.want {
			t.Errorf("%s: IsAggregated = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDecodeRejectsCorruption(t *testing.T) {
	blob := aggregate(roundTripCases[4].recs)
	for i := magicLen; i < len(blob); i++ {
		bad := append([]byte(nil), blob...)
		bad[i] ^= 0x40
		if _, err := Decode(bad); !errors.Is(err, ErrChecksum) {
			t.Fatalf("byte %d flipped: err = %v, want ErrChecksum", i, err)
		}
	}
}

func TestDecodeTruncated(t *testing.T) {
	blob := aggregate(roundTripCases[6].recs)
	for n := range len(blob) {
		_, err := Decode(blob[:n])
		switch {
		case n < Overhead || n < magicLen:
			if !errors.Is(err, ErrNotAggregated) {
				t.Errorf("%d of %d bytes: err = %v, want ErrNotAggregated", n, len(blob), err)
			}
		case !errors.Is(err, ErrChecksum):
			t.Errorf("%d of %d bytes: err = %v, want ErrChecksum", n, len(blob), err)
		}
	}
}
