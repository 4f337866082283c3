package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// The bridge reads pgoutput protocol 1 strictly: a message that ends
// early, runs on past its last field or holds a value the protocol does
// not define is an error that names the message and the byte, never a
// panic or a half-read event. pglogrepl's decoders index past the end of
// short messages, so the messages are read here.

// Errors about messages that do not follow the protocol; each is wrapped
// with the message's name and where it went wrong.
var (
	errEmptyMessage    = errors.New("pgoutput: empty message")
	errTruncated       = errors.New("truncated")
	errTrailingBytes   = errors.New("trailing bytes")
	errUnknownType     = errors.New("unknown message type")
	errNotRequested    = errors.New("not requested")
	errTupleKind       = errors.New("unknown tuple kind")
	errColumnKind      = errors.New("unknown column kind")
	errColumnCount     = errors.New("column count differs from the relation's")
	errUnknownRelation = errors.New("unknown relation")
)

// messageNames names pgoutput's message types for errors, those of
// protocols 2 to 4 included: the bridge requests protocol 1, and a
// streaming or two-phase message means the session was started with
// options the bridge does not use.
var messageNames = [256]string{
	'B': "Begin", 'C': "Commit", 'O': "Origin", 'R': "Relation", 'Y': "Type",
	'I': "Insert", 'U': "Update", 'D': "Delete", 'T': "Truncate", 'M': "Message",
	'S': "Stream Start", 'E': "Stream Stop", 'c': "Stream Commit", 'A': "Stream Abort",
	'b': "Begin Prepare", 'P': "Prepare", 'K': "Commit Prepared", 'r': "Rollback Prepared",
	'p': "Stream Prepare",
}

// notRequestedError is the error for a message of protocol 2 or later.
func notRequestedError(typ byte) error {
	return fmt.Errorf("pgoutput: %s message (%q) %w: the bridge uses protocol 1, without streaming or two-phase decoding",
		messageNames[typ], typ, errNotRequested)
}

// msgReader reads the fields of one message, remembering the first
// failure; offsets count from the message's type byte.
type msgReader struct {
	msg []byte
	off int
	err error
}

func newMsgReader(msg []byte) msgReader { return msgReader{msg: msg, off: 1} }

func (r *msgReader) name() string { return messageNames[r.msg[0]] }

// need reports whether n more bytes are there, failing the read if not.
func (r *msgReader) need(n int, what string) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || n > len(r.msg)-r.off {
		r.truncated(fmt.Sprintf("%s at byte %d", what, r.off))
		return false
	}
	return true
}

func (r *msgReader) truncated(detail string) {
	if r.err == nil {
		r.err = fmt.Errorf("pgoutput: %s message %w at byte %d (reading %s)", r.name(), errTruncated, len(r.msg), detail)
	}
}

func (r *msgReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *msgReader) u8(what string) byte {
	if !r.need(1, what) {
		return 0
	}
	r.off++
	return r.msg[r.off-1]
}

func (r *msgReader) u16(what string) uint16 {
	if !r.need(2, what) {
		return 0
	}
	r.off += 2
	return binary.BigEndian.Uint16(r.msg[r.off-2:])
}

func (r *msgReader) u32(what string) uint32 {
	if !r.need(4, what) {
		return 0
	}
	r.off += 4
	return binary.BigEndian.Uint32(r.msg[r.off-4:])
}

func (r *msgReader) u64(what string) uint64 {
	if !r.need(8, what) {
		return 0
	}
	r.off += 8
	return binary.BigEndian.Uint64(r.msg[r.off-8:])
}

// pgEpoch is PostgreSQL's timestamp epoch.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// timestamp reads a TimestampTz: microseconds since 2000-01-01, in the
// local time zone as pglogrepl gives it.
func (r *msgReader) timestamp(what string) time.Time {
	us := int64(r.u64(what))
	if r.err != nil {
		return time.Time{}
	}
	return time.Unix(0, (pgEpoch.Unix()*1_000_000+us)*1000)
}

// str reads a NUL-terminated string.
func (r *msgReader) str(what string) string {
	if r.err != nil {
		return ""
	}
	end := bytes.IndexByte(r.msg[r.off:], 0)
	if end < 0 {
		r.truncated(fmt.Sprintf("%s at byte %d, which has no terminating NUL", what, r.off))
		return ""
	}
	s := string(r.msg[r.off : r.off+end])
	r.off += end + 1
	return s
}

// bytes returns the next n bytes, pointing into the message.
func (r *msgReader) bytes(n int, what string) []byte {
	if !r.need(n, what) {
		return nil
	}
	b := r.msg[r.off : r.off+n : r.off+n]
	r.off += n
	return b
}

// end returns the read's error, or an error if bytes are left over.
func (r *msgReader) end() error {
	if r.err == nil && r.off != len(r.msg) {
		r.err = fmt.Errorf("pgoutput: %s message has %d %w after byte %d", r.name(), len(r.msg)-r.off, errTrailingBytes, r.off)
	}
	return r.err
}

func parseBegin(msg []byte) (m pglogrepl.BeginMessage, err error) {
	r := newMsgReader(msg)
	m.FinalLSN = pglogrepl.LSN(r.u64("the final LSN"))
	m.CommitTime = r.timestamp("the commit time")
	m.Xid = r.u32("the xid")
	m.SetType(pglogrepl.MessageTypeBegin)
	return m, r.end()
}

func parseCommit(msg []byte) (m pglogrepl.CommitMessage, err error) {
	r := newMsgReader(msg)
	m.Flags = r.u8("the flags")
	m.CommitLSN = pglogrepl.LSN(r.u64("the commit LSN"))
	m.TransactionEndLSN = pglogrepl.LSN(r.u64("the end LSN"))
	m.CommitTime = r.timestamp("the commit time")
	m.SetType(pglogrepl.MessageTypeCommit)
	return m, r.end()
}

func parseOrigin(msg []byte) (m pglogrepl.OriginMessage, err error) {
	r := newMsgReader(msg)
	m.CommitLSN = pglogrepl.LSN(r.u64("the commit LSN"))
	m.Name = r.str("the origin name")
	m.SetType(pglogrepl.MessageTypeOrigin)
	return m, r.end()
}

func parseRelation(msg []byte) (m pglogrepl.RelationMessage, err error) {
	r := newMsgReader(msg)
	m.RelationID = r.u32("the relation id")
	m.Namespace = r.str("the namespace")
	m.RelationName = r.str("the relation name")
	m.ReplicaIdentity = r.u8("the replica identity")
	m.ColumnNum = r.u16("the column count")
	for i := range int(m.ColumnNum) {
		if r.err != nil {
			break
		}
		c := &pglogrepl.RelationMessageColumn{}
		c.Flags = r.u8(fmt.Sprintf("column %d's flags", i))
		c.Name = r.str(fmt.Sprintf("column %d's name", i))
		c.DataType = r.u32(fmt.Sprintf("column %d's type", i))
		c.TypeModifier = int32(r.u32(fmt.Sprintf("column %d's type modifier", i)))
		m.Columns = append(m.Columns, c)
	}
	m.SetType(pglogrepl.MessageTypeRelation)
	return m, r.end()
}

func parseType(msg []byte) (m pglogrepl.TypeMessage, err error) {
	r := newMsgReader(msg)
	m.DataType = r.u32("the type id")
	m.Namespace = r.str("the namespace")
	m.Name = r.str("the type name")
	m.SetType(pglogrepl.MessageTypeType)
	return m, r.end()
}

func parseTruncate(msg []byte) (m pglogrepl.TruncateMessage, err error) {
	r := newMsgReader(msg)
	m.RelationNum = r.u32("the relation count")
	m.Option = r.u8("the options")
	// The count is checked against the message before anything is
	// allocated for it.
	if r.need(int(m.RelationNum)*4, fmt.Sprintf("%d relation ids", m.RelationNum)) {
		m.RelationIDs = make([]uint32, m.RelationNum)
		for i := range m.RelationIDs {
			m.RelationIDs[i] = r.u32("a relation id")
		}
	}
	m.SetType(pglogrepl.MessageTypeTruncate)
	return m, r.end()
}

func parseMessage(msg []byte) (m pglogrepl.LogicalDecodingMessage, err error) {
	r := newMsgReader(msg)
	m.Transactional = r.u8("the flags") == 1
	m.LSN = pglogrepl.LSN(r.u64("the LSN"))
	m.Prefix = r.str("the prefix")
	n := r.u32("the content length")
	m.Content = r.bytes(int(n), fmt.Sprintf("%d bytes of content", n))
	m.SetType(pglogrepl.MessageTypeMessage)
	return m, r.end()
}
