package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/jackc/pglogrepl"
)

// decoder turns pgoutput messages into events, in stream order, for one
// replication session. It is used by one goroutine.
//
// It never holds a transaction: each change becomes an event as it is
// decoded, except that the latest event is held back until the next one
// (or the Commit) arrives, so that the last event of a transaction can
// carry last_in_tx and the transaction's end LSN.
type decoder struct {
	source  string // the events' CloudEvents source
	types   *typeCache
	catalog catalogQuerier
	pos     *positions
	emit    cdc.Emit
	metrics *metrics
	log     *slog.Logger

	rels map[uint32]*relation

	// Transaction state, between Begin and Commit.
	inTx         bool
	commitLSN    uint64
	commitLSNStr string
	commitTime   time.Time
	xid          uint32
	ordinal      uint32
	span         *checkpoint.Span[uint64]
	ack          func()
	held         *cdc.Event
	origin       string

	rc rowChange // reused

	marks marks
	// onRequest handles the bridge's own messages (snapshot requests).
	onRequest func(content []byte, lsn uint64)
}

func newDecoder(source string, types *typeCache, catalog catalogQuerier, pos *positions, emit cdc.Emit, m *metrics, log *slog.Logger) *decoder {
	return &decoder{source: source, types: types, catalog: catalog, pos: pos, emit: emit, metrics: m, log: log, rels: make(map[uint32]*relation)}
}

// handle decodes one pgoutput message (an XLogData payload).
func (d *decoder) handle(ctx context.Context, msg []byte, serverTime time.Time) error {
	if len(msg) == 0 {
		return errEmptyMessage
	}
	switch msg[0] {
	case 'B':
		m, err := parseBegin(msg)
		if err != nil {
			return err
		}
		return d.begin(ctx, &m)
	case 'C':
		m, err := parseCommit(msg)
		if err != nil {
			return err
		}
		return d.commit(ctx, &m)
	case 'R':
		m, err := parseRelation(msg)
		if err != nil {
			return err
		}
		return d.relation(ctx, &m)
	case 'Y':
		m, err := parseType(msg)
		if err != nil {
			return err
		}
		d.types.noteName(m.DataType, m.Namespace+"."+m.Name)
		return nil
	case 'O':
		m, err := parseOrigin(msg)
		if err != nil {
			return err
		}
		d.origin = m.Name
		return nil
	case 'I', 'U', 'D':
		if err := d.rc.parse(msg); err != nil {
			return err
		}
		return d.rowChange(ctx, msg[0])
	case 'T':
		m, err := parseTruncate(msg)
		if err != nil {
			return err
		}
		return d.truncate(ctx, &m)
	case 'M':
		m, err := parseMessage(msg)
		if err != nil {
			return err
		}
		return d.message(ctx, &m, serverTime)
	case 'S', 'E', 'c', 'A', 'b', 'P', 'K', 'r', 'p':
		// Streamed (in-progress) and two-phase transactions are never
		// requested.
		return notRequestedError(msg[0])
	default:
		return fmt.Errorf("pgoutput: %w %q", errUnknownType, msg[0])
	}
}

// keepalive notes the server's WAL end from a keepalive, in stream order.
func (d *decoder) keepalive(ctx context.Context, walEnd uint64) error {
	if d.inTx {
		return nil
	}
	d.pos.noteKeepalive(walEnd)
	return d.streamPassed(ctx, walEnd)
}

func (d *decoder) begin(ctx context.Context, m *pglogrepl.BeginMessage) error {
	if d.inTx {
		return fmt.Errorf("Begin of transaction %d inside transaction %d", m.Xid, d.xid)
	}
	// Every transaction committed before this one has been decoded.
	if err := d.streamPassed(ctx, uint64(m.FinalLSN)); err != nil {
		return err
	}
	d.marks.noteTx(m.Xid)
	d.inTx = true
	d.pos.inTx.Store(true)
	d.commitLSN = uint64(m.FinalLSN)
	d.commitLSNStr = cdc.FormatLSN(d.commitLSN)
	d.commitTime = m.CommitTime
	d.xid = m.Xid
	d.ordinal = 0
	d.origin = ""
	d.span = d.pos.tracker.Open(m.CommitTime)
	d.ack = d.span.Done
	return nil
}

func (d *decoder) commit(ctx context.Context, m *pglogrepl.CommitMessage) error {
	if !d.inTx {
		return fmt.Errorf("Commit at %s outside a transaction", m.CommitLSN)
	}
	end := uint64(m.TransactionEndLSN)
	if e := d.held; e != nil {
		d.held = nil
		e.Info.LastInTx = true
		e.Info.TxEndLSN = cdc.FormatLSN(end)
		if err := d.send(ctx, e); err != nil {
			return err
		}
	}
	d.span.Seal(end)
	d.span, d.ack = nil, nil
	d.inTx = false
	d.pos.inTx.Store(false)
	return d.streamPassed(ctx, end)
}

// push emits the held event and holds e in its place.
func (d *decoder) push(ctx context.Context, e *cdc.Event) error {
	if h := d.held; h != nil {
		d.held = nil
		if err := d.send(ctx, h); err != nil {
			return err
		}
	}
	d.held = e
	return nil
}

func (d *decoder) send(ctx context.Context, e *cdc.Event) error {
	d.span.Add()
	e.OnAck = d.ack
	d.metrics.received[e.Op].Inc()
	return sinkError(ctx, d.emit(ctx, e))
}

// txEvent starts an event of the open transaction with the next ordinal.
func (d *decoder) txEvent(op cdc.Op, subject, schema, table string) *cdc.Event {
	d.ordinal++
	id := cdc.ChangeID(d.commitLSN, d.ordinal)
	return &cdc.Event{
		ID: id, Sequence: id, Source: d.source, Subject: subject, Time: d.commitTime, Op: op,
		Info: cdc.SourceInfo{CommitLSN: d.commitLSNStr, TxID: d.xid, Ordinal: d.ordinal, Schema: schema, Table: table},
	}
}

func (d *decoder) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	// Composite column types may have changed along with the table.
	d.types.forgetComposites()
	oids := make([]uint32, len(m.Columns))
	for i, c := range m.Columns {
		oids[i] = c.DataType
	}
	infos, err := d.types.resolve(ctx, d.catalog, oids)
	if err != nil {
		return err
	}
	rel := newRelation(m.RelationID, m.Namespace, m.RelationName, m.ReplicaIdentity)
	flagged := make([]bool, len(m.Columns))
	for i, c := range m.Columns {
		rel.addColumn(c.Name, c.DataType, infos[c.DataType])
		flagged[i] = c.Flags&1 != 0
	}
	keys, err := lookupIndexKeys(ctx, d.catalog, m.RelationID)
	if err != nil {
		return err
	}
	rel.keyIdx = chooseKey(m.ReplicaIdentity, rel.columnNames(), flagged, keys)
	if old, ok := d.rels[m.RelationID]; ok && d.log.Enabled(ctx, slog.LevelDebug) {
		d.log.Debug("relation changed", "table", rel.qualified, "columns", len(rel.cols), "previous_columns", len(old.cols))
	}
	d.rels[m.RelationID] = rel
	return nil
}

// rel returns the relation a message of type typ refers to.
func (d *decoder) rel(id uint32, typ byte) (*relation, error) {
	r, ok := d.rels[id]
	if !ok {
		return nil, fmt.Errorf("pgoutput: %s message for %w %d, which no Relation message described", messageNames[typ], errUnknownRelation, id)
	}
	return r, nil
}

func (d *decoder) rowChange(ctx context.Context, typ byte) error {
	if !d.inTx {
		return fmt.Errorf("%s message outside a transaction", messageNames[typ])
	}
	rel, err := d.rel(d.rc.relID, typ)
	if err != nil {
		return err
	}
	rc := &d.rc
	if err := rc.checkColumns(rel, typ); err != nil {
		return err
	}
	var old, before *tuple
	if rc.oldKind != 0 {
		old = &rc.old
	}
	if rc.oldKind == 'O' {
		before = &rc.old // the complete old row (FULL identity)
	}
	switch typ {
	case 'I':
		return d.emitRow(ctx, cdc.OpInsert, rel, images{key: &rc.new, after: &rc.new})
	case 'D':
		return d.emitRow(ctx, cdc.OpDelete, rel, images{key: old, before: before})
	}
	// Update. With FULL identity the old row comes complete ('O'); with a
	// key identity the old key ('K') comes only when the key changed (or
	// is stored out of line).
	if old != nil && len(rel.keyIdx) > 0 && !rel.sameKey(old, &rc.new) {
		// A new primary key is a different row: the old one is deleted and
		// the new one inserted, each under its own key.
		if err := d.emitRow(ctx, cdc.OpDelete, rel, images{key: old, before: before}); err != nil {
			return err
		}
		return d.emitRow(ctx, cdc.OpInsert, rel, images{key: &rc.new, keyAlt: old, after: &rc.new, fill: before})
	}
	return d.emitRow(ctx, cdc.OpUpdate, rel, images{key: &rc.new, keyAlt: old, before: before, after: &rc.new, fill: before})
}

// images names the tuples an event is built from.
type images struct {
	key    *tuple // holds the key columns
	keyAlt *tuple // supplies key columns key left out as unchanged TOAST
	before *tuple // the old row; used only when complete
	after  *tuple // the new row
	fill   *tuple // supplies after's unchanged TOAST values when complete
}

func (d *decoder) emitRow(ctx context.Context, op cdc.Op, rel *relation, im images) error {
	e := d.txEvent(op, rel.qualified, rel.schema, rel.table)
	if err := buildImages(e, rel, im); err != nil {
		return err
	}
	if len(d.marks.windows) > 0 {
		d.noteRowChange(rel, e)
	}
	return d.push(ctx, e)
}

// buildImages fills e's key, partition key, before and after, in one
// allocation.
func buildImages(e *cdc.Event, rel *relation, im images) error {
	keyFrom, keyAlt, before, after, fill := im.key, im.keyAlt, im.before, im.after, im.fill
	if before != nil && !complete(before) {
		before = nil
	}
	if fill != nil && !complete(fill) {
		fill = nil
	}
	size := 2
	for _, t := range []*tuple{before, after} {
		if t == nil {
			continue
		}
		for i, c := range t.cols {
			size += len(c.data) + 8
			if i < len(rel.cols) {
				size += len(rel.cols[i].key)
			}
		}
	}
	size += 16 * (len(rel.keyIdx) + 1)
	buf := make([]byte, 0, size+size/4)
	if keyFrom != nil && len(rel.keyIdx) > 0 {
		start := len(buf)
		var arr []byte
		buf, arr = rel.appendKey(buf, keyFrom, keyAlt)
		e.Key = buf[start:len(buf):len(buf)]
		e.PartitionKey = cdc.PartitionKey(rel.qualified, arr)
	} else {
		e.PartitionKey = rel.tableKey
	}
	var err error
	if after != nil {
		start := len(buf)
		if buf, e.UnchangedToast, err = rel.appendRow(buf, after, fill); err != nil {
			return err
		}
		e.After = buf[start:len(buf):len(buf)]
	}
	if before != nil {
		start := len(buf)
		if buf, _, err = rel.appendRow(buf, before, nil); err != nil {
			return err
		}
		e.Before = buf[start:len(buf):len(buf)]
	}
	return nil
}

func (d *decoder) truncate(ctx context.Context, m *pglogrepl.TruncateMessage) error {
	if !d.inTx {
		return fmt.Errorf("Truncate message outside a transaction")
	}
	for _, id := range m.RelationIDs {
		rel, err := d.rel(id, 'T')
		if err != nil {
			return err
		}
		e := d.txEvent(cdc.OpTruncate, rel.qualified, rel.schema, rel.table)
		e.PartitionKey = rel.tableKey
		d.noteTruncate(rel)
		if err := d.push(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// messagePartitionKey orders messages per prefix.
func messagePartitionKey(prefix string) string {
	arr := cdc.AppendJSONString([]byte{'['}, prefix)
	return cdc.PartitionKey("pg_logical_emit_message", append(arr, ']'))
}

func (d *decoder) message(ctx context.Context, m *pglogrepl.LogicalDecodingMessage, serverTime time.Time) error {
	if m.Prefix == snapshotPrefix {
		if d.onRequest != nil {
			d.onRequest(m.Content, uint64(m.LSN))
		}
		return nil
	}
	msg := &cdc.Message{Prefix: m.Prefix, Transactional: m.Transactional, Content: m.Content}
	if d.inTx {
		// Transactional messages, and any non-transactional one a server
		// might send inside a transaction, take their place in it.
		e := d.txEvent(cdc.OpMessage, m.Prefix, "", "")
		e.Message = msg
		e.PartitionKey = messagePartitionKey(m.Prefix)
		return d.push(ctx, e)
	}
	lsn := uint64(m.LSN)
	id := cdc.MessageID(lsn)
	e := &cdc.Event{
		ID: id, Sequence: id, Source: d.source, Subject: m.Prefix, Time: serverTime, Op: cdc.OpMessage,
		PartitionKey: messagePartitionKey(m.Prefix), Message: msg,
		Info: cdc.SourceInfo{LSN: cdc.FormatLSN(lsn)},
	}
	span := d.pos.tracker.Open(serverTime)
	span.Add()
	e.OnAck = span.Done
	d.metrics.received[cdc.OpMessage].Inc()
	err := sinkError(ctx, d.emit(ctx, e))
	// Confirming the message's own LSN re-sends it after a restart at
	// worst; it never skips anything after it.
	span.Seal(lsn)
	if err != nil {
		return err
	}
	return d.streamPassed(ctx, lsn)
}

// sinkError classifies an error from emit: with ctx still live, the sink
// refused the event for good (it retries transient failures itself), and
// replaying the stream would only meet the same refusal.
func sinkError(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	return fatal(fmt.Errorf("the sink refused an event: %w", err))
}
