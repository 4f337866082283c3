package postgres

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// validFrame is a well-formed message and the name errors give it.
type validFrame struct {
	name string
	msg  []byte
}

// validFrames are well-formed messages of every type the decoder reads,
// each decodable in a transaction after ordersRel and notesRel.
func validFrames() []validFrame {
	return []validFrame{
		{"Begin", beginMsg(finalLSN, commitTime, xid)},
		{"Commit", commitMsg(finalLSN, endLSN, commitTime)},
		{"Origin", originMsg(0x1000, "upstream")},
		{"Type", typeMsg(90001, "public", "mood")},
		{"Relation", ordersRel},
		{"Relation", notesRel},
		{"Insert", insertMsg(ordersID, txt("1"), null, bin("\x00\x01"))},
		{"Update", updateMsg(ordersID, 0, nil, []col{txt("1"), toast, txt("2")})},
		{"Update", updateMsg(ordersID, 'K', []col{txt("1"), null, null}, []col{txt("2"), txt("x"), txt("2")})},
		{"Update", updateMsg(notesID, 'O', []col{txt("a"), txt("b")}, []col{txt("a"), toast})},
		{"Delete", deleteMsg(ordersID, 'K', txt("1"), null, null)},
		{"Delete", deleteMsg(notesID, 'O', txt("a"), txt("b"))},
		{"Truncate", truncateMsg(truncCascade|truncRestartIdentity, ordersID, notesID)},
		{"Message", logicalMsg(true, 0x16B3700, "audit", "who=ann")},
		{"Message", logicalMsg(false, 0x16B3700, "beat", "")},
	}
}

// inTx returns a decoder in a transaction that knows orders and notes.
func inTx(t *testing.T) *decoderRun {
	t.Helper()
	r := newDecoderRun(testKeys)
	r.mustFeed(t, beginMsg(finalLSN, commitTime, xid), ordersRel, notesRel)
	return r
}

// TestDecodeTruncated feeds every valid message cut at every byte.
func TestDecodeTruncated(t *testing.T) {
	for _, f := range validFrames() {
		if err := inTx(t).feed(f.msg); err != nil && f.name != "Begin" {
			t.Fatalf("%s %q: %v", f.name, f.msg, err)
		}
		for n := range len(f.msg) {
			err := inTx(t).d.handle(t.Context(), f.msg[:n], serverTime)
			if n == 0 {
				if !errors.Is(err, errEmptyMessage) {
					t.Errorf("empty message: %v, want %v", err, errEmptyMessage)
				}
				continue
			}
			want := fmt.Sprintf("pgoutput: %s message truncated at byte %d (reading ", f.name, n)
			if !errors.Is(err, errTruncated) || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("%s %q cut to %d bytes: %v, want %s...", f.name, f.msg, n, err, want)
			}
		}
	}
}

// TestDecodeTrailingBytes feeds every valid message with a byte too many.
func TestDecodeTrailingBytes(t *testing.T) {
	for _, f := range validFrames() {
		msg := append(append([]byte(nil), f.msg...), 0)
		err := inTx(t).d.handle(t.Context(), msg, serverTime)
		want := fmt.Sprintf("pgoutput: %s message has 1 trailing bytes after byte %d", f.name, len(f.msg))
		if !errors.Is(err, errTrailingBytes) || err.Error() != want {
			t.Errorf("%s %q: %v, want %s", f.name, msg, err, want)
		}
	}
}

// withLen returns msg with the big-endian uint32 at off replaced by v.
func withLen(msg []byte, off int, v uint32) []byte {
	out := append([]byte(nil), msg...)
	binary.BigEndian.PutUint32(out[off:], v)
	return out
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		is   error
		want string
	}{{
		name: "unknown message type",
		msg:  newFrame('Z').u32(1),
		is:   errUnknownType,
		want: `pgoutput: unknown message type 'Z'`,
	}, {
		name: "column length past the end",
		// 'I', relid (1-4), 'N' (5), count (6-7), 't' (8), length at 9.
		msg:  withLen(insertMsg(ordersID, txt("1"), txt("ab"), txt("3")), 9, 1000),
		is:   errTruncated,
		want: `pgoutput: Insert message truncated at byte 27 (reading the 1000-byte value of column 0 of the new tuple at byte 13)`,
	}, {
		name: "column length of 2^32-1",
		msg:  withLen(insertMsg(ordersID, txt("1"), txt("ab"), txt("3")), 9, 0xFFFFFFFF),
		is:   errTruncated,
		want: `pgoutput: Insert message truncated at byte 27 (reading the 4294967295-byte value of column 0 of the new tuple at byte 13)`,
	}, {
		name: "truncate relation count larger than the message",
		msg:  withLen(truncateMsg(0, ordersID), 1, 0x40000000),
		is:   errTruncated,
		want: `pgoutput: Truncate message truncated at byte 10 (reading 1073741824 relation ids at byte 6)`,
	}, {
		name: "message content length larger than the message",
		msg:  withLen(logicalMsg(true, 1, "p", "abc"), 12, 4),
		is:   errTruncated,
		want: `pgoutput: Message message truncated at byte 19 (reading 4 bytes of content at byte 16)`,
	}, {
		name: "relation column count larger than the message",
		msg:  newFrame('R').u32(1).str("s").str("t").u8('d').u16(2).u8(0).str("a").u32(oidText).u32(0),
		is:   errTruncated,
		want: `pgoutput: Relation message truncated at byte 23 (reading column 1's flags at byte 23)`,
	}, {
		name: "relation name without NUL",
		msg:  newFrame('R').u32(1).str("s").raw('t'),
		is:   errTruncated,
		want: `pgoutput: Relation message truncated at byte 8 (reading the relation name at byte 7, which has no terminating NUL)`,
	}, {
		name: "insert with fewer columns than the relation",
		msg:  insertMsg(ordersID, txt("1"), null),
		is:   errColumnCount,
		want: `pgoutput: Insert message for public.orders: column count differs from the relation's: the new tuple has 2 columns, the relation 3`,
	}, {
		name: "insert with more columns than the relation",
		msg:  insertMsg(ordersID, txt("1"), null, null, null),
		is:   errColumnCount,
		want: `pgoutput: Insert message for public.orders: column count differs from the relation's: the new tuple has 4 columns, the relation 3`,
	}, {
		name: "delete key tuple with only the key column",
		msg:  deleteMsg(ordersID, 'K', txt("1")),
		is:   errColumnCount,
		want: `pgoutput: Delete message for public.orders: column count differs from the relation's: the old tuple has 1 columns, the relation 3`,
	}, {
		name: "update old row with a missing column",
		msg:  updateMsg(notesID, 'O', []col{txt("a")}, []col{txt("a"), txt("b")}),
		is:   errColumnCount,
		want: `pgoutput: Update message for app.notes: column count differs from the relation's: the old tuple has 1 columns, the relation 2`,
	}, {
		name: "update new row with an extra column",
		msg:  updateMsg(notesID, 'O', []col{txt("a"), txt("b")}, []col{txt("a"), txt("b"), txt("c")}),
		is:   errColumnCount,
		want: `pgoutput: Update message for app.notes: column count differs from the relation's: the new tuple has 3 columns, the relation 2`,
	}, {
		name: "insert for an unknown relation",
		msg:  insertMsg(1234, txt("1")),
		is:   errUnknownRelation,
		want: `pgoutput: Insert message for unknown relation 1234, which no Relation message described`,
	}, {
		name: "delete for an unknown relation",
		msg:  deleteMsg(1234, 'K', txt("1")),
		is:   errUnknownRelation,
		want: `pgoutput: Delete message for unknown relation 1234, which no Relation message described`,
	}, {
		name: "truncate of an unknown relation",
		msg:  truncateMsg(0, ordersID, 1234),
		is:   errUnknownRelation,
		want: `pgoutput: Truncate message for unknown relation 1234, which no Relation message described`,
	}, {
		name: "insert with an old key",
		msg:  newFrame('I').u32(ordersID).u8('K').tuple(txt("1"), null, null),
		is:   errTupleKind,
		want: `pgoutput: Insert message: unknown tuple kind 'K' at byte 5, want N`,
	}, {
		name: "update with an unknown tuple kind",
		msg:  newFrame('U').u32(ordersID).u8('X').tuple(txt("1"), null, null),
		is:   errTupleKind,
		want: `pgoutput: Update message: unknown tuple kind 'X' at byte 5, want K, O or N`,
	}, {
		name: "update with two old tuples",
		msg:  newFrame('U').u32(ordersID).u8('K').tuple(txt("1"), null, null).u8('O').tuple(txt("1"), null, null),
		is:   errTupleKind,
		want: `pgoutput: Update message: unknown tuple kind 'O' at byte 16, want N`,
	}, {
		name: "delete with a new tuple",
		msg:  newFrame('D').u32(ordersID).u8('N').tuple(txt("1"), null, null),
		is:   errTupleKind,
		want: `pgoutput: Delete message: unknown tuple kind 'N' at byte 5, want K or O`,
	}, {
		name: "unknown column kind",
		msg:  insertMsg(ordersID, txt("1"), col{kind: 'x'}, null),
		is:   errColumnKind,
		want: `pgoutput: Insert message: unknown column kind 'x' for column 1 of the new tuple at byte 14, want n, u, t or b`,
	}, {
		name: "unknown column kind in an old key",
		msg:  deleteMsg(ordersID, 'K', col{kind: 0}),
		is:   errColumnKind,
		want: `pgoutput: Delete message: unknown column kind '\x00' for column 0 of the old tuple at byte 8, want n, u, t or b`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := inTx(t)
			err := r.d.handle(t.Context(), tt.msg, serverTime)
			if !errors.Is(err, tt.is) || err.Error() != tt.want {
				t.Errorf("%q:\n got %v\nwant %s", tt.msg, err, tt.want)
			}
			if len(r.events) != 0 {
				t.Errorf("%d events emitted", len(r.events))
			}
		})
	}
}

// TestDecodeOutOfOrder feeds messages where the protocol does not allow
// them.
func TestDecodeOutOfOrder(t *testing.T) {
	tests := []struct {
		name string
		msgs [][]byte
		want string
	}{
		{"Begin in a transaction", [][]byte{beginMsg(finalLSN, commitTime, xid), beginMsg(finalLSN+8, commitTime, xid+1)},
			"message 1: Begin of transaction 732 inside transaction 731"},
		{"Commit outside a transaction", [][]byte{commitMsg(finalLSN, endLSN, commitTime)},
			"message 0: Commit at 0/16B3748 outside a transaction"},
		{"Insert outside a transaction", [][]byte{ordersRel, insertMsg(ordersID, txt("1"), null, null)},
			"message 1: Insert message outside a transaction"},
		{"Update outside a transaction", [][]byte{ordersRel, updateMsg(ordersID, 0, nil, []col{txt("1"), null, null})},
			"message 1: Update message outside a transaction"},
		{"Delete outside a transaction", [][]byte{ordersRel, deleteMsg(ordersID, 'K', txt("1"), null, null)},
			"message 1: Delete message outside a transaction"},
		{"Truncate outside a transaction", [][]byte{ordersRel, truncateMsg(0, ordersID)},
			"message 1: Truncate message outside a transaction"},
	}
	for _, tt := range tests {
		r := newDecoderRun(testKeys)
		if err := r.feed(tt.msgs...); err == nil || err.Error() != tt.want {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.want)
		}
		if len(r.events) != 0 {
			t.Errorf("%s: %d events emitted", tt.name, len(r.events))
		}
	}
}

// fuzzFrames joins messages into one fuzz input: each is preceded by its
// length as a big-endian uint16.
func fuzzFrames(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

// FuzzDecode feeds arbitrary messages to a decoder that knows orders and
// notes. The decoder must not panic, and what it emits before an error
// must be well-formed: JSON key and row images, a partition key.
func FuzzDecode(f *testing.F) {
	begin := beginMsg(finalLSN, commitTime, xid)
	commit := commitMsg(finalLSN, endLSN, commitTime)
	for _, v := range validFrames() {
		f.Add(fuzzFrames(v.msg))
		f.Add(fuzzFrames(begin, ordersRel, notesRel, v.msg, commit))
	}
	f.Add(fuzzFrames(begin, ordersRel, insertMsg(ordersID, txt("1"), txt("a"), txt("1")),
		relationMsg(ordersID, "public", "orders", 'd', relCol{"id", oidInt8, true}, relCol{"at", oidTimestampTZ, false}),
		insertMsg(ordersID, txt("2"), txt("2026-03-14 15:09:26.5+01")), commit))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newDecoderRun(testKeys)
		withJSON := map[string]bool{} // tables that had a json column at some point
		for len(data) >= 2 {
			n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
			msg := data[2 : 2+n]
			data = data[2+n:]
			before := len(r.events)
			err := r.d.handle(t.Context(), msg, serverTime)
			for _, rel := range r.d.rels {
				if embedsJSON(rel) {
					withJSON[rel.qualified] = true
				}
			}
			if err != nil {
				if err.Error() == "" {
					t.Fatalf("%q: empty error", msg)
				}
				// A failed message emits nothing of its own (the held
				// event of an earlier one may go out).
				if len(r.events) > before+1 {
					t.Fatalf("%q failed with %v after emitting %d events", msg, err, len(r.events)-before)
				}
				break
			}
		}
		for _, e := range r.events {
			if e.PartitionKey == "" {
				t.Errorf("event %s without a partition key", e.ID)
			}
			if withJSON[e.Info.Schema+"."+e.Info.Table] {
				continue // json and jsonb text is embedded as the server sends it
			}
			for name, b := range map[string][]byte{"key": e.Key, "before": e.Before, "after": e.After} {
				if b != nil && !json.Valid(b) {
					t.Errorf("event %s: %s is not JSON: %q", e.ID, name, b)
				}
			}
		}
	})
}

// embedsJSON reports whether rel has a json or jsonb column, or one of
// a type holding them.
func embedsJSON(rel *relation) bool {
	var has func(ti *typeInfo, depth int) bool
	has = func(ti *typeInfo, depth int) bool {
		if ti == nil || depth > 16 {
			return false
		}
		if ti.kind == kindJSON || has(ti.elem, depth+1) {
			return true
		}
		for _, f := range ti.fields {
			if has(f.ti, depth+1) {
				return true
			}
		}
		return false
	}
	for _, c := range rel.cols {
		if has(c.ti, 0) {
			return true
		}
	}
	return false
}

// TestDecodeTimestampNotISO feeds timestamp text that PostgreSQL's ISO
// output never has (found by FuzzDecode): it is written as a JSON string
// instead of being copied into the document.
func TestDecodeTimestampNotISO(t *testing.T) {
	r := newDecoderRun(testKeys)
	r.mustFeed(t,
		beginMsg(finalLSN, commitTime, xid),
		relationMsg(ordersID, "public", "orders", 'd', relCol{"id", oidInt8, true}, relCol{"at", oidTimestampTZ, false}, relCol{"t", oidTimestamp, false}),
		insertMsg(ordersID, txt("1"), txt(`2026-03-14 1"5`), txt("2026-03-14 15:09:26\n")),
		insertMsg(ordersID, txt("2"), txt("2026-03-14 15:09:26+05"), txt("2026-03-14 15:09:26")),
		commitMsg(finalLSN, endLSN, commitTime),
	)
	var after []string
	for _, e := range r.events {
		after = append(after, string(e.After))
	}
	want := []string{
		`{"id":1,"at":"2026-03-14 1\"5","t":"2026-03-14 15:09:26\n"}`,
		`{"id":2,"at":"2026-03-14T15:09:26+05:00","t":"2026-03-14T15:09:26"}`,
	}
	if diff := cmp.Diff(want, after); diff != "" {
		t.Errorf("after images (-want +got):\n%s", diff)
	}
}
