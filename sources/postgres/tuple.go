package postgres

import (
	"encoding/binary"
	"errors"
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

var errShortMessage = errors.New("message ends early")

// parse reads a TupleData at the start of src into t, reusing t.cols, and
// returns the bytes after it. Unlike pglogrepl's decoder it copies nothing:
// a row is converted to JSON straight from the message.
func (t *tuple) parse(src []byte) ([]byte, error) {
	if len(src) < 2 {
		return nil, errShortMessage
	}
	n := int(binary.BigEndian.Uint16(src))
	src = src[2:]
	t.cols = t.cols[:0]
	for range n {
		if len(src) < 1 {
			return nil, errShortMessage
		}
		c := tupleCol{kind: src[0]}
		src = src[1:]
		switch c.kind {
		case colNull, colUnchanged:
		case colText, colBinary:
			if len(src) < 4 {
				return nil, errShortMessage
			}
			l := int(binary.BigEndian.Uint32(src))
			src = src[4:]
			if l < 0 || l > len(src) {
				return nil, errShortMessage
			}
			c.data = src[:l:l]
			src = src[l:]
		default:
			return nil, fmt.Errorf("unknown tuple column kind %q", c.kind)
		}
		t.cols = append(t.cols, c)
	}
	return src, nil
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
	typ := msg[0]
	src := msg[1:]
	if len(src) < 5 {
		return fmt.Errorf("%c message: %w", typ, errShortMessage)
	}
	rc.relID = binary.BigEndian.Uint32(src)
	src = src[4:]
	rc.oldKind, rc.hasNew = 0, false
	rc.old.cols, rc.new.cols = rc.old.cols[:0], rc.new.cols[:0]
	var err error
	switch typ {
	case 'I':
		if src[0] != 'N' {
			return fmt.Errorf("insert message: tuple kind %q, want N", src[0])
		}
		_, err = rc.new.parse(src[1:])
		rc.hasNew = true
	case 'U':
		if src[0] == 'K' || src[0] == 'O' {
			rc.oldKind = src[0]
			if src, err = rc.old.parse(src[1:]); err != nil {
				break
			}
			if len(src) < 1 {
				err = errShortMessage
				break
			}
		}
		if src[0] != 'N' {
			return fmt.Errorf("update message: tuple kind %q, want N", src[0])
		}
		_, err = rc.new.parse(src[1:])
		rc.hasNew = true
	case 'D':
		if src[0] != 'K' && src[0] != 'O' {
			return fmt.Errorf("delete message: tuple kind %q, want K or O", src[0])
		}
		rc.oldKind = src[0]
		_, err = rc.old.parse(src[1:])
	}
	if err != nil {
		return fmt.Errorf("%c message: %w", typ, err)
	}
	return nil
}
