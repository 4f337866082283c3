package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// This file builds pgoutput messages byte by byte and runs a decoder on
// them without a server: the decoder's catalog queries go to fakeCatalog.
// Nothing here calls testenv, so TestMain starts no server for the tests
// that use it.

// frame is a pgoutput message under construction.
type frame []byte

func newFrame(typ byte) frame { return frame{typ} }

func (f frame) u8(v byte) frame     { return append(f, v) }
func (f frame) u16(v uint16) frame  { return binary.BigEndian.AppendUint16(f, v) }
func (f frame) u32(v uint32) frame  { return binary.BigEndian.AppendUint32(f, v) }
func (f frame) u64(v uint64) frame  { return binary.BigEndian.AppendUint64(f, v) }
func (f frame) str(s string) frame  { return append(append(f, s...), 0) }
func (f frame) raw(b ...byte) frame { return append(f, b...) }

// ts appends a TimestampTz: microseconds since 2000-01-01 00:00 UTC.
func (f frame) ts(t time.Time) frame {
	const y2k = 946684800 // 2000-01-01 in Unix seconds
	return f.u64(uint64(t.UnixMicro() - y2k*1_000_000))
}

// col is one column of a TupleData.
type col struct {
	kind byte
	data string
}

func txt(s string) col { return col{'t', s} }
func bin(s string) col { return col{'b', s} }

var (
	null  = col{kind: 'n'}
	toast = col{kind: 'u'}
)

// tuple appends a TupleData.
func (f frame) tuple(cols ...col) frame {
	f = f.u16(uint16(len(cols)))
	for _, c := range cols {
		f = f.u8(c.kind)
		if c.kind == 't' || c.kind == 'b' {
			f = f.u32(uint32(len(c.data))).raw([]byte(c.data)...)
		}
	}
	return f
}

func beginMsg(finalLSN uint64, commitTime time.Time, xid uint32) []byte {
	return newFrame('B').u64(finalLSN).ts(commitTime).u32(xid)
}

func commitMsg(commitLSN, endLSN uint64, commitTime time.Time) []byte {
	return newFrame('C').u8(0).u64(commitLSN).u64(endLSN).ts(commitTime)
}

func originMsg(lsn uint64, name string) []byte { return newFrame('O').u64(lsn).str(name) }

func typeMsg(oid uint32, namespace, name string) []byte {
	return newFrame('Y').u32(oid).str(namespace).str(name)
}

// relCol is a column of a Relation message; key marks a replica
// identity column (flag 1).
type relCol struct {
	name string
	oid  uint32
	key  bool
}

func relationMsg(id uint32, namespace, name string, identity byte, cols ...relCol) []byte {
	f := newFrame('R').u32(id).str(namespace).str(name).u8(identity).u16(uint16(len(cols)))
	for _, c := range cols {
		var flags byte
		if c.key {
			flags = 1
		}
		f = f.u8(flags).str(c.name).u32(c.oid).u32(0xFFFFFFFF) // typmod -1
	}
	return f
}

func insertMsg(rel uint32, cols ...col) []byte {
	return newFrame('I').u32(rel).u8('N').tuple(cols...)
}

// updateMsg builds an Update; oldKind 0 leaves the old tuple out.
func updateMsg(rel uint32, oldKind byte, old, new []col) []byte {
	f := newFrame('U').u32(rel)
	if oldKind != 0 {
		f = f.u8(oldKind).tuple(old...)
	}
	return f.u8('N').tuple(new...)
}

func deleteMsg(rel uint32, kind byte, old ...col) []byte {
	return newFrame('D').u32(rel).u8(kind).tuple(old...)
}

// Truncate options.
const (
	truncCascade         = 1
	truncRestartIdentity = 2
)

func truncateMsg(options byte, rels ...uint32) []byte {
	f := newFrame('T').u32(uint32(len(rels))).u8(options)
	for _, r := range rels {
		f = f.u32(r)
	}
	return f
}

func logicalMsg(transactional bool, lsn uint64, prefix, content string) []byte {
	var flags byte
	if transactional {
		flags = 1
	}
	return newFrame('M').u8(flags).u64(lsn).str(prefix).u32(uint32(len(content))).raw([]byte(content)...)
}

// fakeCatalog answers the decoder's catalog queries: the index keys of
// the relations in keys, and no pg_type rows (so every type the cache
// does not know is written as text).
type fakeCatalog struct {
	keys map[uint32]indexKeys
}

func (c *fakeCatalog) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	switch {
	case strings.Contains(sql, "pg_index"):
		id, ok := args[0].(int64)
		if !ok {
			return nil, fmt.Errorf("fakeCatalog: relation id %T, want int64", args[0])
		}
		k := c.keys[uint32(id)]
		rows := &fakeRows{}
		if k.pk != nil {
			rows.rows = append(rows.rows, []any{true, false, k.pk})
		}
		if k.ri != nil {
			rows.rows = append(rows.rows, []any{false, true, k.ri})
		}
		return rows, nil
	case strings.Contains(sql, "pg_type"):
		return &fakeRows{}, nil
	}
	return nil, fmt.Errorf("fakeCatalog: unexpected query %q", sql)
}

// fakeRows is a result of fakeCatalog.
type fakeRows struct {
	rows [][]any
	cur  []any
}

func (r *fakeRows) Close()                                       {}
func (r *fakeRows) Err() error                                   { return nil }
func (r *fakeRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (r *fakeRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (r *fakeRows) RawValues() [][]byte                          { return nil }
func (r *fakeRows) Conn() *pgx.Conn                              { return nil }
func (r *fakeRows) Values() ([]any, error)                       { return r.cur, nil }
func (r *fakeRows) TypeMap() *pgtype.Map                         { return nil }

func (r *fakeRows) Next() bool {
	if len(r.rows) == 0 {
		return false
	}
	r.cur, r.rows = r.rows[0], r.rows[1:]
	return true
}

func (r *fakeRows) Scan(dest ...any) error {
	if len(dest) != len(r.cur) {
		return fmt.Errorf("fakeRows: %d destinations for %d values", len(dest), len(r.cur))
	}
	for i, d := range dest {
		switch d := d.(type) {
		case *bool:
			*d = r.cur[i].(bool)
		case *[]string:
			*d = r.cur[i].([]string)
		default:
			return fmt.Errorf("fakeRows: destination %T", d)
		}
	}
	return nil
}

// decoderRun is a decoder on a fake catalog, with the events it emitted.
type decoderRun struct {
	d      *decoder
	events []*cdc.Event
}

const testSource = "/cdcbridge/postgres/test/db/slot"

func newDecoderRun(keys map[uint32]indexKeys) *decoderRun {
	r := &decoderRun{}
	emit := func(_ context.Context, e *cdc.Event) error {
		r.events = append(r.events, e)
		e.Ack()
		return nil
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r.d = newDecoder(testSource, newTypeCache(), &fakeCatalog{keys: keys}, newPositions(0), emit, newMetrics(nil), log)
	return r
}

// feed decodes msgs in order, stopping at the first error.
func (r *decoderRun) feed(msgs ...[]byte) error {
	for i, m := range msgs {
		if err := r.d.handle(context.Background(), m, serverTime); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return nil
}

func (r *decoderRun) mustFeed(t *testing.T, msgs ...[]byte) {
	t.Helper()
	if err := r.feed(msgs...); err != nil {
		t.Fatal(err)
	}
}

// The tables of the tests: orders has a primary key (replica identity
// default), notes has none and replica identity full.
const (
	ordersID = 16384
	notesID  = 16390
)

var (
	commitTime = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)
	serverTime = time.Date(2026, 3, 14, 15, 9, 27, 0, time.UTC)

	testKeys = map[uint32]indexKeys{ordersID: {pk: []string{"id"}}}

	ordersRel = relationMsg(ordersID, "public", "orders", 'd',
		relCol{"id", oidInt8, true}, relCol{"note", oidText, false}, relCol{"amount", oidNumeric, false})
	notesRel = relationMsg(notesID, "app", "notes", 'f',
		relCol{"k", oidText, true}, relCol{"v", oidText, true})
)

const (
	finalLSN = 0x16B3748
	endLSN   = 0x16B3780
	xid      = 731
)
