package postgres

import (
	"encoding/binary"
	"fmt"
)

// Tuple column kinds in pgoutput's TupleData.
const (
	colNull      = 'n'
	colUnchanged = 'u' // an unchanged TOAST value, not sent
	colText      = 't'
	colBinary    = 'b'
)

type tupleCol struct {
	kind byte
	data []byte // points into the message
}

// tuple is a row's columns, from a pgoutput TupleData or a snapshot row.
// They point into the bytes they were read from (the message, the fetched
// row), so a tuple is valid only while those are; its owners reuse the
// slice.
type tuple struct {
	cols []tupleCol
}

// parse reads a TupleData at r's position into t, reusing t.cols. Unlike
// pglogrepl's decoder it copies nothing: a row is converted to JSON
// straight from the message.
func (t *tuple) parse(r *msgReader, which string) {
	t.cols = t.cols[:0]
	if r.err != nil {
		return
	}
	if len(r.msg)-r.off < 2 {
		r.truncated(fmt.Sprintf("the column count of the %s tuple at byte %d", which, r.off))
		return
	}
	n := int(binary.BigEndian.Uint16(r.msg[r.off:]))
	r.off += 2
	for i := range n {
		if r.err != nil {
			return
		}
		if r.off >= len(r.msg) {
			r.truncated(fmt.Sprintf("column %d of the %s tuple at byte %d", i, which, r.off))
			return
		}
		c := tupleCol{kind: r.msg[r.off]}
		r.off++
		switch c.kind {
		case colNull, colUnchanged:
		case colText, colBinary:
			if len(r.msg)-r.off < 4 {
				r.truncated(fmt.Sprintf("the length of column %d of the %s tuple at byte %d", i, which, r.off))
				return
			}
			l := int(binary.BigEndian.Uint32(r.msg[r.off:]))
			r.off += 4
			if l < 0 || l > len(r.msg)-r.off {
				r.truncated(fmt.Sprintf("the %d-byte value of column %d of the %s tuple at byte %d", l, i, which, r.off))
				return
			}
			c.data = r.msg[r.off : r.off+l : r.off+l]
			r.off += l
		default:
			r.fail(fmt.Errorf("pgoutput: %s message: %w %q for column %d of the %s tuple at byte %d, want n, u, t or b",
				r.name(), errColumnKind, c.kind, i, which, r.off-1))
			return
		}
		t.cols = append(t.cols, c)
	}
}

// rowChange is an Insert, Update or Delete message.
type rowChange struct {
	relID   uint32
	oldKind byte // 0, 'K' (key columns only) or 'O' (whole old row)
	old     tuple
	new     tuple
	hasNew  bool
}

// parse decodes an Insert ('I'), Update ('U') or Delete ('D') message into
// rc, reusing its column slices; like tuple.parse it copies no column data.
func (rc *rowChange) parse(msg []byte) error {
	r := newMsgReader(msg)
	rc.relID = r.u32("the relation id")
	rc.oldKind, rc.hasNew = 0, false
	rc.old.cols, rc.new.cols = rc.old.cols[:0], rc.new.cols[:0]
	kind := r.u8("the tuple kind")
	switch typ := msg[0]; typ {
	case 'I':
		if r.err == nil && kind != 'N' {
			return tupleKindError(&r, kind, "N")
		}
	case 'U':
		if r.err == nil && kind != 'K' && kind != 'O' && kind != 'N' {
			return tupleKindError(&r, kind, "K, O or N")
		}
		if kind == 'K' || kind == 'O' {
			rc.oldKind = kind
			rc.old.parse(&r, "old")
			kind = r.u8("the new tuple's kind")
			if r.err == nil && kind != 'N' {
				return tupleKindError(&r, kind, "N")
			}
		}
	case 'D':
		if r.err == nil && kind != 'K' && kind != 'O' {
			return tupleKindError(&r, kind, "K or O")
		}
		rc.oldKind = kind
		rc.old.parse(&r, "old")
		return r.end()
	}
	rc.new.parse(&r, "new")
	rc.hasNew = true
	return r.end()
}

// tupleKindError reports the tuple kind byte just read.
func tupleKindError(r *msgReader, kind byte, want string) error {
	return fmt.Errorf("pgoutput: %s message: %w %q at byte %d, want %s", r.name(), errTupleKind, kind, r.off-1, want)
}

// checkColumns reports an error unless every tuple of rc has rel's
// columns: pgoutput sends each of them, as null when it is not part of
// an old key.
func (rc *rowChange) checkColumns(rel *relation, typ byte) error {
	check := func(t *tuple, which string) error {
		if len(t.cols) == len(rel.cols) {
			return nil
		}
		return fmt.Errorf("pgoutput: %s message for %s: %w: the %s tuple has %d columns, the relation %d",
			messageNames[typ], rel.qualified, errColumnCount, which, len(t.cols), len(rel.cols))
	}
	if rc.oldKind != 0 {
		if err := check(&rc.old, "old"); err != nil {
			return err
		}
	}
	if rc.hasNew {
		return check(&rc.new, "new")
	}
	return nil
}
