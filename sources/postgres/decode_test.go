package postgres

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The decoder requests protocol 1 (startArgs). Protocols 2 to 4 send the
// same Begin, Commit, Origin, Relation, Type, Insert, Update, Delete,
// Truncate and Message outside streamed transactions; what they add
// (streaming, two-phase) the decoder refuses, see TestDecodeNotRequested.

var ignoreAck = cmpopts.IgnoreFields(cdc.Event{}, "OnAck")

// TestDecodeTransaction checks every field of the events of one
// transaction.
func TestDecodeTransaction(t *testing.T) {
	r := newDecoderRun(testKeys)
	r.mustFeed(t,
		beginMsg(finalLSN, commitTime, xid),
		originMsg(0x1000, "upstream"),
		typeMsg(90001, "public", "mood"),
		ordersRel,
		insertMsg(ordersID, txt("1"), txt("first"), txt("9.50")),
		truncateMsg(truncCascade|truncRestartIdentity, ordersID),
		logicalMsg(true, 0x16B3700, "audit", "who=ann"),
		commitMsg(finalLSN, endLSN, commitTime),
	)
	lsn := cdc.FormatLSN(finalLSN)
	info := func(ord uint32) cdc.SourceInfo {
		return cdc.SourceInfo{CommitLSN: lsn, TxID: xid, Ordinal: ord, Schema: "public", Table: "orders"}
	}
	last := cdc.SourceInfo{CommitLSN: lsn, TxID: xid, Ordinal: 3, LastInTx: true, TxEndLSN: cdc.FormatLSN(endLSN)}
	want := []*cdc.Event{{
		ID: "00000000016B3748:00000001", Sequence: "00000000016B3748:00000001", Source: testSource,
		Subject: "public.orders", Time: commitTime, Op: cdc.OpInsert,
		PartitionKey: cdc.PartitionKey("public.orders", []byte("[1]")),
		Key:          json.RawMessage(`{"id":1}`),
		After:        json.RawMessage(`{"id":1,"note":"first","amount":9.50}`),
		Info:         info(1),
	}, {
		ID: "00000000016B3748:00000002", Sequence: "00000000016B3748:00000002", Source: testSource,
		Subject: "public.orders", Time: commitTime, Op: cdc.OpTruncate,
		PartitionKey: cdc.TablePartitionKey("public.orders"),
		Info:         info(2),
	}, {
		ID: "00000000016B3748:00000003", Sequence: "00000000016B3748:00000003", Source: testSource,
		Subject: "audit", Time: commitTime, Op: cdc.OpMessage,
		PartitionKey: messagePartitionKey("audit"),
		Message:      &cdc.Message{Prefix: "audit", Transactional: true, Content: []byte("who=ann")},
		Info:         last,
	}}
	if diff := cmp.Diff(want, r.events, ignoreAck); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if got := r.d.origin; got != "upstream" {
		t.Errorf("origin %q, want upstream", got)
	}
	if got := r.d.types.names[90001]; got != "public.mood" {
		t.Errorf("type 90001 named %q, want public.mood", got)
	}
	if r.d.inTx || r.d.pos.inTx.Load() {
		t.Error("transaction still open after Commit")
	}
	if got := r.d.marks.passed; got != endLSN {
		t.Errorf("stream passed %X, want the end LSN %X", got, uint64(endLSN))
	}
}

// change is the part of an event a row change decides.
type change struct {
	Op                 cdc.Op
	Subject, Partition string
	Key, Before, After string
	Unchanged          []string
}

func changes(events []*cdc.Event) []change {
	out := make([]change, len(events))
	for i, e := range events {
		out[i] = change{Op: e.Op, Subject: e.Subject, Partition: e.PartitionKey,
			Key: string(e.Key), Before: string(e.Before), After: string(e.After), Unchanged: e.UnchangedToast}
	}
	return out
}

func TestDecodeRowChanges(t *testing.T) {
	ordersKey := func(arr string) string { return cdc.PartitionKey("public.orders", []byte(arr)) }
	notesKey := cdc.TablePartitionKey("app.notes")
	tests := []struct {
		name string
		msgs [][]byte
		want []change
	}{{
		name: "insert text, null and binary",
		msgs: [][]byte{insertMsg(ordersID, txt("7"), null, bin("\x01A"))},
		want: []change{{Op: cdc.OpInsert, Subject: "public.orders", Partition: ordersKey("[7]"),
			Key: `{"id":7}`, After: `{"id":7,"note":null,"amount":"\u0001A"}`}},
	}, {
		name: "update without old tuple, unchanged TOAST left out",
		msgs: [][]byte{updateMsg(ordersID, 0, nil, []col{txt("7"), toast, txt("1.25")})},
		want: []change{{Op: cdc.OpUpdate, Subject: "public.orders", Partition: ordersKey("[7]"),
			Key: `{"id":7}`, After: `{"id":7,"amount":1.25}`, Unchanged: []string{"note"}}},
	}, {
		name: "update with old key, same key",
		msgs: [][]byte{updateMsg(ordersID, 'K', []col{txt("7"), null, null}, []col{txt("7"), txt("x"), txt("2")})},
		want: []change{{Op: cdc.OpUpdate, Subject: "public.orders", Partition: ordersKey("[7]"),
			Key: `{"id":7}`, After: `{"id":7,"note":"x","amount":2}`}},
	}, {
		name: "update with old key, key changed: delete and insert",
		msgs: [][]byte{updateMsg(ordersID, 'K', []col{txt("7"), null, null}, []col{txt("8"), txt("x"), txt("2")})},
		want: []change{
			{Op: cdc.OpDelete, Subject: "public.orders", Partition: ordersKey("[7]"), Key: `{"id":7}`},
			{Op: cdc.OpInsert, Subject: "public.orders", Partition: ordersKey("[8]"), Key: `{"id":8}`,
				After: `{"id":8,"note":"x","amount":2}`},
		},
	}, {
		name: "update with old key, new key unchanged TOAST taken from the old key",
		msgs: [][]byte{updateMsg(ordersID, 'K', []col{txt("7"), null, null}, []col{toast, txt("x"), txt("2")})},
		want: []change{{Op: cdc.OpUpdate, Subject: "public.orders", Partition: ordersKey("[7]"),
			Key: `{"id":7}`, After: `{"note":"x","amount":2}`, Unchanged: []string{"id"}}},
	}, {
		name: "update with old row (full identity), unchanged TOAST filled from it",
		msgs: [][]byte{updateMsg(notesID, 'O', []col{txt("a"), txt("long")}, []col{txt("b"), toast})},
		want: []change{{Op: cdc.OpUpdate, Subject: "app.notes", Partition: notesKey,
			Before: `{"k":"a","v":"long"}`, After: `{"k":"b","v":"long"}`}},
	}, {
		name: "update with incomplete old row: no before image, TOAST not filled",
		msgs: [][]byte{updateMsg(notesID, 'O', []col{txt("a"), toast}, []col{txt("b"), toast})},
		want: []change{{Op: cdc.OpUpdate, Subject: "app.notes", Partition: notesKey,
			After: `{"k":"b"}`, Unchanged: []string{"v"}}},
	}, {
		name: "delete with old key",
		msgs: [][]byte{deleteMsg(ordersID, 'K', txt("7"), null, null)},
		want: []change{{Op: cdc.OpDelete, Subject: "public.orders", Partition: ordersKey("[7]"), Key: `{"id":7}`}},
	}, {
		name: "delete with old row",
		msgs: [][]byte{deleteMsg(notesID, 'O', txt("a"), null)},
		want: []change{{Op: cdc.OpDelete, Subject: "app.notes", Partition: notesKey, Before: `{"k":"a","v":null}`}},
	}, {
		name: "truncate of several relations",
		msgs: [][]byte{truncateMsg(truncRestartIdentity, notesID, ordersID)},
		want: []change{
			{Op: cdc.OpTruncate, Subject: "app.notes", Partition: notesKey},
			{Op: cdc.OpTruncate, Subject: "public.orders", Partition: cdc.TablePartitionKey("public.orders")},
		},
	}, {
		name: "truncate cascade",
		msgs: [][]byte{truncateMsg(truncCascade, ordersID)},
		want: []change{{Op: cdc.OpTruncate, Subject: "public.orders", Partition: cdc.TablePartitionKey("public.orders")}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newDecoderRun(testKeys)
			r.mustFeed(t, beginMsg(finalLSN, commitTime, xid), ordersRel, notesRel)
			r.mustFeed(t, tt.msgs...)
			r.mustFeed(t, commitMsg(finalLSN, endLSN, commitTime))
			if diff := cmp.Diff(tt.want, changes(r.events)); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
			for i, e := range r.events {
				if want := uint32(i + 1); e.Info.Ordinal != want {
					t.Errorf("event %d: ordinal %d, want %d", i, e.Info.Ordinal, want)
				}
				if last := i == len(r.events)-1; e.Info.LastInTx != last {
					t.Errorf("event %d: last_in_tx %v, want %v", i, e.Info.LastInTx, last)
				}
			}
		})
	}
}

// TestDecodeRelationChange sends a second Relation message for a table,
// as the server does after ALTER TABLE: later rows are read with the new
// columns, and a row with the old column count is refused.
func TestDecodeRelationChange(t *testing.T) {
	r := newDecoderRun(testKeys)
	r.mustFeed(t,
		beginMsg(finalLSN, commitTime, xid),
		ordersRel,
		insertMsg(ordersID, txt("1"), txt("a"), txt("1")),
		relationMsg(ordersID, "public", "orders", 'd',
			relCol{"id", oidInt8, true}, relCol{"amount", oidNumeric, false}, relCol{"paid", oidBool, false}, relCol{"tags", 1009, false}),
		insertMsg(ordersID, txt("2"), txt("3"), txt("t"), txt(`{x,"y z"}`)),
		commitMsg(finalLSN, endLSN, commitTime),
	)
	var after []string
	for _, e := range r.events {
		after = append(after, string(e.After))
	}
	want := []string{`{"id":1,"note":"a","amount":1}`, `{"id":2,"amount":3,"paid":true,"tags":["x","y z"]}`}
	if diff := cmp.Diff(want, after); diff != "" {
		t.Errorf("after images (-want +got):\n%s", diff)
	}

	err := r.feed(beginMsg(finalLSN+0x100, commitTime, xid+1), insertMsg(ordersID, txt("3"), txt("b"), txt("2")))
	const msg = "message 1: pgoutput: Insert message for public.orders: column count differs from the relation's: the new tuple has 3 columns, the relation 4"
	if !errors.Is(err, errColumnCount) || err.Error() != msg {
		t.Errorf("insert with the old columns: %v, want %s", err, msg)
	}
}

func TestDecodeMessage(t *testing.T) {
	t.Run("non-transactional outside a transaction", func(t *testing.T) {
		r := newDecoderRun(nil)
		r.mustFeed(t, logicalMsg(false, 0x2000, "beat", "\x00\xff"))
		want := []*cdc.Event{{
			ID: "0000000000002000:M", Sequence: "0000000000002000:M", Source: testSource,
			Subject: "beat", Time: serverTime, Op: cdc.OpMessage, PartitionKey: messagePartitionKey("beat"),
			Message: &cdc.Message{Prefix: "beat", Content: []byte("\x00\xff")},
			Info:    cdc.SourceInfo{LSN: "0/2000"},
		}}
		if diff := cmp.Diff(want, r.events, ignoreAck); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		if got := r.d.marks.passed; got != 0x2000 {
			t.Errorf("stream passed %X, want 2000", got)
		}
	})
	t.Run("snapshot request", func(t *testing.T) {
		r := newDecoderRun(nil)
		var gotContent string
		var gotLSN uint64
		r.d.onRequest = func(content []byte, lsn uint64) { gotContent, gotLSN = string(content), lsn }
		r.mustFeed(t, logicalMsg(false, 0x3000, snapshotPrefix, `{"table":"public.orders"}`))
		if len(r.events) != 0 {
			t.Errorf("snapshot request emitted %d events", len(r.events))
		}
		if gotContent != `{"table":"public.orders"}` || gotLSN != 0x3000 {
			t.Errorf("onRequest(%q, %X), want the content at 3000", gotContent, gotLSN)
		}
	})
	t.Run("empty content", func(t *testing.T) {
		r := newDecoderRun(nil)
		r.mustFeed(t, logicalMsg(false, 0x2000, "p", ""))
		if len(r.events) != 1 || len(r.events[0].Message.Content) != 0 {
			t.Fatalf("events %+v, want one with empty content", r.events)
		}
	})
}

// TestDecodeNotRequested feeds the messages protocols 2 to 4 add. The
// decoder never asks for them; each is refused by name, and a following
// transaction still decodes.
func TestDecodeNotRequested(t *testing.T) {
	const gid = "tx-1"
	tests := []struct {
		msg  []byte
		want string
	}{
		// Protocol 2: streaming.
		{newFrame('S').u32(xid).u8(1), `pgoutput: Stream Start message ('S') not requested`},
		{newFrame('E'), `pgoutput: Stream Stop message ('E') not requested`},
		{newFrame('c').u32(xid).u8(0).u64(finalLSN).u64(endLSN).ts(commitTime), `pgoutput: Stream Commit message ('c') not requested`},
		{newFrame('A').u32(xid).u32(xid), `pgoutput: Stream Abort message ('A') not requested`},
		// Protocol 4 adds the abort LSN and time for parallel apply.
		{newFrame('A').u32(xid).u32(xid).u64(endLSN).ts(commitTime), `pgoutput: Stream Abort message ('A') not requested`},
		// Protocol 3: two-phase.
		{newFrame('b').u64(finalLSN).u64(endLSN).ts(commitTime).u32(xid).str(gid), `pgoutput: Begin Prepare message ('b') not requested`},
		{newFrame('P').u8(0).u64(finalLSN).u64(endLSN).ts(commitTime).u32(xid).str(gid), `pgoutput: Prepare message ('P') not requested`},
		{newFrame('K').u8(0).u64(finalLSN).u64(endLSN).ts(commitTime).u32(xid).str(gid), `pgoutput: Commit Prepared message ('K') not requested`},
		{newFrame('r').u8(0).u64(endLSN).u64(endLSN).ts(commitTime).ts(commitTime).u32(xid).str(gid), `pgoutput: Rollback Prepared message ('r') not requested`},
		{newFrame('p').u8(0).u64(finalLSN).u64(endLSN).ts(commitTime).u32(xid).str(gid), `pgoutput: Stream Prepare message ('p') not requested`},
	}
	const why = ": the bridge uses protocol 1, without streaming or two-phase decoding"
	for _, tt := range tests {
		r := newDecoderRun(testKeys)
		err := r.d.handle(t.Context(), tt.msg, serverTime)
		if !errors.Is(err, errNotRequested) || err.Error() != tt.want+why {
			t.Errorf("%q: %v, want %s", tt.msg, err, tt.want+why)
		}
		r.mustFeed(t, beginMsg(finalLSN, commitTime, xid), ordersRel, insertMsg(ordersID, txt("1"), null, null), commitMsg(finalLSN, endLSN, commitTime))
		if len(r.events) != 1 {
			t.Errorf("after %q: %d events, want 1", tt.msg, len(r.events))
		}
	}
}

// TestDecodeStreamedChange feeds an Insert of a streamed transaction
// (protocol 2), which carries the xid before the relation id: it must not
// be read as an Insert into the relation with the xid's number.
func TestDecodeStreamedChange(t *testing.T) {
	r := newDecoderRun(testKeys)
	r.mustFeed(t, beginMsg(finalLSN, commitTime, xid), ordersRel)
	msg := newFrame('I').u32(ordersID).u32(ordersID).u8('N').tuple(txt("1"), null, null)
	err := r.d.handle(t.Context(), msg, serverTime)
	const want = `pgoutput: Insert message: unknown tuple kind '\x00' at byte 5, want N`
	if !errors.Is(err, errTupleKind) || err.Error() != want {
		t.Errorf("streamed insert: %v, want %s", err, want)
	}
	if len(r.events) != 0 {
		t.Errorf("%d events", len(r.events))
	}
}
