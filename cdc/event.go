// Package cdc defines the change event that flows from a source to the sink
// and its wire form, a CloudEvents 1.0 JSON document (structured mode).
//
// Guarantees: Encode is deterministic (the same Event always gives the same
// bytes), so a re-sent change is byte-identical to its first send; Decode
// accepts everything Encode produces and rejects documents that are not
// cdcbridge envelopes with an error naming the problem.
package cdc

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Op is the kind of change.
type Op uint8

const (
	OpInvalid Op = iota
	OpInsert
	OpUpdate
	OpDelete
	OpTruncate
	OpRead    // a row of an initial snapshot
	OpMessage // a logical decoding message
)

var opNames = [...]string{"", "insert", "update", "delete", "truncate", "read", "message"}

// Ops lists every valid Op, in declaration order.
var Ops = []Op{OpInsert, OpUpdate, OpDelete, OpTruncate, OpRead, OpMessage}

func (o Op) String() string {
	if int(o) < len(opNames) && o != OpInvalid {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// ParseOp returns the Op named s ("insert", "update", ...).
func ParseOp(s string) (Op, error) {
	for i := 1; i < len(opNames); i++ {
		if opNames[i] == s {
			return Op(i), nil
		}
	}
	return OpInvalid, fmt.Errorf("unknown op %q (want one of insert, update, delete, truncate, read, message)", s)
}

// TypePrefix is prepended to the op name to form the CloudEvents type.
const TypePrefix = "io.cdcbridge."

// Type returns the CloudEvents type attribute for o.
func (o Op) Type() string { return TypePrefix + o.String() }

// IsRow reports whether o describes one row (and so carries key and images).
func (o Op) IsRow() bool {
	return o == OpInsert || o == OpUpdate || o == OpDelete || o == OpRead
}

// Event is one captured change.
//
// Key, Before and After hold JSON already in its final form (the source
// converts values once, the sink never re-encodes them). A nil Before or
// After is written as null: Before is only ever a complete old row.
type Event struct {
	ID           string    // idempotency key; identical when the change is sent again
	Source       string    // CloudEvents source, e.g. /cdcbridge/postgres/<sysid>/<db>/<slot>
	Subject      string    // schema.table (Postgres) or table name (DynamoDB)
	Time         time.Time // commit time; zero when unknown
	PartitionKey string    // Kinesis partition key, see PartitionKey
	Sequence     string    // sorts in source order for the same row
	Op           Op

	Key            json.RawMessage // JSON object of the primary-key columns
	Before         json.RawMessage // complete old row or nil
	After          json.RawMessage // new row or nil
	UnchangedToast []string        // columns left out of After because they did not change

	Message  *Message  // OpMessage only
	Oversize *Oversize // set on the placeholder of a dead-lettered record
	Replayed bool      // re-sent from the dead-letter directory

	Info SourceInfo // data.source

	// OnAck, when set, is called by the sink exactly once, after Kinesis
	// accepted the event's record (or its placeholder).
	OnAck func()
}

// Ack reports the event as accepted downstream.
func (e *Event) Ack() {
	if e.OnAck != nil {
		e.OnAck()
	}
}

// Message is the payload of a logical decoding message.
type Message struct {
	Prefix        string
	Transactional bool
	Content       []byte
}

// Oversize describes a record kept in the dead-letter directory instead of
// the stream.
type Oversize struct {
	Bytes int    `json:"bytes"`
	DLQ   string `json:"dlq"` // "<file>#<line>"
}

// SourceInfo is data.source: where in the source the change came from. Only
// the fields of the event's source kind are set.
type SourceInfo struct {
	// PostgreSQL transactional change (CommitLSN set): ordinal and
	// last_in_tx are always written.
	CommitLSN string `json:"commit_lsn,omitempty"`
	// TxEndLSN is the end of the transaction's commit record. It is known
	// only once the commit is decoded, so it is set on the last event of a
	// transaction (LastInTx) and may be absent on earlier ones.
	TxEndLSN string `json:"tx_end_lsn,omitempty"`
	TxID     uint32 `json:"txid,omitempty"`
	Ordinal  uint32 `json:"ordinal,omitempty"`
	LastInTx bool   `json:"last_in_tx,omitempty"`
	// LSN of a non-transactional message.
	LSN string `json:"lsn,omitempty"`
	// Snapshot rows.
	Snapshot        bool   `json:"snapshot,omitempty"`
	ConsistentPoint string `json:"consistent_point,omitempty"`

	Schema string `json:"schema,omitempty"`
	Table  string `json:"table,omitempty"`

	// DynamoDB Streams.
	ShardID        string `json:"shard_id,omitempty"`
	SequenceNumber string `json:"sequence_number,omitempty"`
	EventName      string `json:"event_name,omitempty"`
	ViewType       string `json:"stream_view_type,omitempty"`
	TTL            bool   `json:"ttl,omitempty"`
}

// Sink takes events and delivers them; Put blocks while the sink's in-flight
// budget is used up.
type Sink interface {
	Put(ctx context.Context, e *Event) error
}

// Emit hands one event from a source to the sink.
type Emit func(ctx context.Context, e *Event) error

// Source captures changes and passes them to emit in source order until ctx
// ends or a fatal error occurs.
type Source interface {
	Run(ctx context.Context, emit Emit) error
}
