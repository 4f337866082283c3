package cdc

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestIDs(t *testing.T) {
	tests := []struct{ got, want string }{
		{ChangeID(0x16B3748, 3), "00000000016B3748:00000003"},
		{ChangeID(0xFFFFFFFFFFFFFFFF, 99999999), "FFFFFFFFFFFFFFFF:99999999"},
		{SnapshotSequence(0x16B0000), "00000000016B0000:00000000"},
		{MessageID(0xABC), "0000000000000ABC:M"},
		{FormatLSN(0x16B3748), "0/16B3748"},
		{FormatLSN(0x1_0000_00FF), "1/FF"},
		{PartitionKey("public.orders", []byte("[42]")), "public.orders:[42]"},
		{TablePartitionKey("public.logs"), "public.logs:*"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	// Snapshot ids sort before every change after the consistent point.
	if !(SnapshotSequence(0x100) < ChangeID(0x100, 1)) {
		t.Error("snapshot sequence does not sort before the first change")
	}
	id := SnapshotID(0x16B0000, "public.orders", "public.orders:[42]")
	if !strings.HasPrefix(id, "S00000000016B0000:public.orders:") || len(id) != len("S00000000016B0000:public.orders:")+32 {
		t.Errorf("snapshot id %q", id)
	}
	if id == SnapshotID(0x16B0000, "public.orders", "public.orders:[43]") {
		t.Error("two rows share a snapshot id")
	}
}

func TestPartitionKeyHashed(t *testing.T) {
	long := "[\"" + strings.Repeat("x", 300) + "\"]"
	k1 := PartitionKey("public.orders", []byte(long))
	k2 := PartitionKey("public.orders", []byte(long[:len(long)-3]+"y\"]"))
	if len(k1) > MaxPartitionKeyBytes || !strings.HasPrefix(k1, "public.orders:sha256:") || len(k1) != len("public.orders:sha256:")+32 {
		t.Errorf("hashed key %q (%d bytes)", k1, len(k1))
	}
	if k1 == k2 {
		t.Error("different long keys hash to the same partition key")
	}
	if k1 != PartitionKey("public.orders", []byte(long)) {
		t.Error("hashed key is not deterministic")
	}
	// Exactly at the limit stays readable.
	table := "t"
	arr := "[\"" + strings.Repeat("a", MaxPartitionKeyBytes-len(table)-1-4) + "\"]"
	if k := PartitionKey(table, []byte(arr)); k != table+":"+arr || len(k) != MaxPartitionKeyBytes {
		t.Errorf("key at the limit changed: %d bytes", len(k))
	}
	// A very long multi-byte table name is cut on a character boundary.
	table = strings.Repeat("é", 200)
	k := PartitionKey(table, []byte("[1]"))
	if len(k) > MaxPartitionKeyBytes || !utf8.ValidString(k) || !strings.Contains(k, ":sha256:") {
		t.Errorf("long table key %q (%d bytes, valid %v)", k, len(k), utf8.ValidString(k))
	}
}

// A table name that is not UTF-8 (a SQL_ASCII database) still gives a
// UTF-8 partition key, the same one every time, short or hashed.
func TestPartitionKeyInvalidUTF8(t *testing.T) {
	table := "public.caf\xe9"
	for _, arr := range []string{"[1]", "[\"" + strings.Repeat("x", 300) + "\"]"} {
		k := PartitionKey(table, []byte(arr))
		if !utf8.ValidString(k) || len(k) > MaxPartitionKeyBytes || k != PartitionKey(table, []byte(arr)) {
			t.Errorf("key %q: valid UTF-8 %v, %d bytes", k, utf8.ValidString(k), len(k))
		}
		if !strings.HasPrefix(k, "public.caf\uFFFD:") {
			t.Errorf("key %q does not keep the readable part of the table name", k)
		}
	}
}

func TestPadSequence(t *testing.T) {
	got, err := PadSequence("111111111111111111111")
	if err != nil || got != "0000000000000000000111111111111111111111" {
		t.Fatalf("PadSequence = %q, %v", got, err)
	}
	for _, bad := range []string{"", "12a", strings.Repeat("1", 41)} {
		if _, err := PadSequence(bad); err == nil {
			t.Errorf("PadSequence(%q) accepted", bad)
		}
	}
	a, _ := PadSequence("999999999999999999999")
	b, _ := PadSequence("1000000000000000000000")
	if !(a < b) {
		t.Error("padded sequences do not sort numerically")
	}
}

func TestOps(t *testing.T) {
	for _, op := range Ops {
		got, err := ParseOp(op.String())
		if err != nil || got != op {
			t.Errorf("ParseOp(%q) = %v, %v", op, got, err)
		}
		if op.Type() != "io.cdcbridge."+op.String() {
			t.Errorf("type %q", op.Type())
		}
	}
	if _, err := ParseOp("upsert"); err == nil {
		t.Error("unknown op accepted")
	}
}
