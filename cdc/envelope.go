package cdc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// SpecVersion is the CloudEvents version of the envelope.
const SpecVersion = "1.0"

const timeLayout = "2006-01-02T15:04:05.999999999Z07:00"

// Encode returns e's envelope.
func Encode(e *Event) ([]byte, error) { return AppendEncode(nil, e) }

// AppendEncode appends e's envelope to dst. It writes the JSON directly
// (no reflection) and never re-encodes Key, Before or After, which must be
// valid JSON already.
func AppendEncode(dst []byte, e *Event) ([]byte, error) {
	if e.ID == "" || e.Source == "" {
		return dst, errors.New("encoding event: id and source are required")
	}
	if e.Op == OpInvalid || int(e.Op) >= len(opNames) {
		return dst, fmt.Errorf("encoding event %s: invalid op %d", e.ID, e.Op)
	}
	b := append(dst, `{"specversion":"1.0","id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"type":"io.cdcbridge.`...)
	b = append(b, opNames[e.Op]...)
	b = append(b, '"')
	if e.Subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, e.Subject)
	}
	if !e.Time.IsZero() {
		b = append(b, `,"time":"`...)
		b = e.Time.UTC().AppendFormat(b, timeLayout)
		b = append(b, '"')
	}
	b = append(b, `,"datacontenttype":"application/json","partitionkey":`...)
	b = appendString(b, e.PartitionKey)
	if e.Sequence != "" {
		b = append(b, `,"sequence":`...)
		b = appendString(b, e.Sequence)
	}
	b = append(b, `,"data":{"op":"`...)
	b = append(b, opNames[e.Op]...)
	b = append(b, '"')
	switch {
	case e.Oversize != nil:
		if e.Key != nil {
			b = append(b, `,"key":`...)
			b = append(b, e.Key...)
		}
		b = append(b, `,"oversize":{"bytes":`...)
		b = strconv.AppendInt(b, int64(e.Oversize.Bytes), 10)
		b = append(b, `,"dlq":`...)
		b = appendString(b, e.Oversize.DLQ)
		b = append(b, '}')
	case e.Op == OpMessage:
		if e.Message == nil {
			return dst, fmt.Errorf("encoding event %s: message op without message", e.ID)
		}
		b = appendMessage(b, e.Message)
	case e.Op.IsRow():
		b = append(b, `,"key":`...)
		b = appendRaw(b, e.Key)
		b = append(b, `,"before":`...)
		b = appendRaw(b, e.Before)
		b = append(b, `,"after":`...)
		b = appendRaw(b, e.After)
		if len(e.UnchangedToast) > 0 {
			b = append(b, `,"unchanged_toast":[`...)
			for i, c := range e.UnchangedToast {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, c)
			}
			b = append(b, ']')
		}
	}
	if e.Replayed {
		b = append(b, `,"replayed":true`...)
	}
	b = append(b, `,"source":`...)
	b = appendSourceInfo(b, &e.Info)
	b = append(b, "}}"...)
	return b, nil
}

func appendRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

// appendMessage writes content as embedded JSON when it is a JSON value
// other than a string (a string would read back without its quotes), as a
// string when it is UTF-8, else as base64.
func appendMessage(b []byte, m *Message) []byte {
	b = append(b, `,"message":{"prefix":`...)
	b = appendString(b, m.Prefix)
	b = append(b, `,"transactional":`...)
	b = strconv.AppendBool(b, m.Transactional)
	b = append(b, `,"content":`...)
	trimmed := bytes.TrimSpace(m.Content)
	switch {
	case len(trimmed) > 0 && trimmed[0] != '"' && json.Valid(trimmed):
		b = append(b, trimmed...)
	case utf8.Valid(m.Content):
		b = appendString(b, string(m.Content))
	default:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, m.Content)
		b = append(b, `","content_encoding":"base64"`...)
	}
	return append(b, '}')
}

func appendSourceInfo(b []byte, s *SourceInfo) []byte {
	b = append(b, '{')
	n := len(b)
	str := func(name, v string) {
		if v == "" {
			return
		}
		if len(b) > n {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = appendString(b, v)
	}
	num := func(name string, v uint64) {
		if len(b) > n {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendUint(b, v, 10)
	}
	flag := func(name string, v bool) {
		if len(b) > n {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendBool(b, v)
	}
	str("commit_lsn", s.CommitLSN)
	str("tx_end_lsn", s.TxEndLSN)
	if s.TxID != 0 {
		num("txid", uint64(s.TxID))
	}
	if s.CommitLSN != "" {
		num("ordinal", uint64(s.Ordinal))
		flag("last_in_tx", s.LastInTx)
	}
	str("lsn", s.LSN)
	if s.Snapshot {
		flag("snapshot", true)
	}
	str("consistent_point", s.ConsistentPoint)
	str("schema", s.Schema)
	str("table", s.Table)
	str("shard_id", s.ShardID)
	str("sequence_number", s.SequenceNumber)
	str("event_name", s.EventName)
	str("stream_view_type", s.ViewType)
	if s.TTL {
		flag("ttl", true)
	}
	return append(b, '}')
}

// envelope mirrors the document for Decode.
type envelope struct {
	SpecVersion     *string         `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	PartitionKey    string          `json:"partitionkey"`
	Sequence        string          `json:"sequence"`
	Data            json.RawMessage `json:"data"`
}

type envelopeData struct {
	Op             string          `json:"op"`
	Key            json.RawMessage `json:"key"`
	Before         json.RawMessage `json:"before"`
	After          json.RawMessage `json:"after"`
	UnchangedToast []string        `json:"unchanged_toast"`
	Message        *struct {
		Prefix          string          `json:"prefix"`
		Transactional   bool            `json:"transactional"`
		Content         json.RawMessage `json:"content"`
		ContentEncoding string          `json:"content_encoding"`
	} `json:"message"`
	Oversize *Oversize  `json:"oversize"`
	Replayed bool       `json:"replayed"`
	Source   SourceInfo `json:"source"`
}

// Decode parses an envelope. It rejects documents that are not JSON
// objects, lack specversion, id, source, type or data, carry another
// specversion, or name an unknown op.
func Decode(b []byte) (*Event, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("decoding envelope: %w", err)
	}
	switch {
	case env.SpecVersion == nil:
		return nil, errors.New("decoding envelope: missing specversion")
	case *env.SpecVersion != SpecVersion:
		return nil, fmt.Errorf("decoding envelope: specversion %q, want %q", *env.SpecVersion, SpecVersion)
	case env.ID == "":
		return nil, errors.New("decoding envelope: missing id")
	case env.Source == "":
		return nil, fmt.Errorf("decoding envelope %s: missing source", env.ID)
	case len(env.Data) == 0 || bytes.Equal(env.Data, []byte("null")):
		return nil, fmt.Errorf("decoding envelope %s: missing data", env.ID)
	}
	var d envelopeData
	if err := json.Unmarshal(env.Data, &d); err != nil {
		return nil, fmt.Errorf("decoding envelope %s: data: %w", env.ID, err)
	}
	op, err := ParseOp(d.Op)
	if err != nil {
		return nil, fmt.Errorf("decoding envelope %s: data.op: %w", env.ID, err)
	}
	if env.Type != op.Type() {
		return nil, fmt.Errorf("decoding envelope %s: type %q does not match data.op %q", env.ID, env.Type, d.Op)
	}
	e := &Event{
		ID:             env.ID,
		Source:         env.Source,
		Subject:        env.Subject,
		PartitionKey:   env.PartitionKey,
		Sequence:       env.Sequence,
		Op:             op,
		Key:            nullToNil(d.Key),
		Before:         nullToNil(d.Before),
		After:          nullToNil(d.After),
		UnchangedToast: d.UnchangedToast,
		Oversize:       d.Oversize,
		Replayed:       d.Replayed,
		Info:           d.Source,
	}
	if env.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, env.Time)
		if err != nil {
			return nil, fmt.Errorf("decoding envelope %s: time: %w", env.ID, err)
		}
		e.Time = t
	}
	if m := d.Message; m != nil {
		e.Message = &Message{Prefix: m.Prefix, Transactional: m.Transactional}
		switch {
		case m.ContentEncoding == "base64":
			var s string
			if err := json.Unmarshal(m.Content, &s); err != nil {
				return nil, fmt.Errorf("decoding envelope %s: message content: %w", env.ID, err)
			}
			if e.Message.Content, err = base64.StdEncoding.DecodeString(s); err != nil {
				return nil, fmt.Errorf("decoding envelope %s: message content: %w", env.ID, err)
			}
		case m.ContentEncoding != "":
			return nil, fmt.Errorf("decoding envelope %s: unknown message content_encoding %q", env.ID, m.ContentEncoding)
		case len(m.Content) > 0 && m.Content[0] == '"':
			var s string
			if err := json.Unmarshal(m.Content, &s); err != nil {
				return nil, fmt.Errorf("decoding envelope %s: message content: %w", env.ID, err)
			}
			e.Message.Content = []byte(s)
		default:
			e.Message.Content = []byte(m.Content)
		}
	} else if op == OpMessage && d.Oversize == nil {
		return nil, fmt.Errorf("decoding envelope %s: message event without data.message", env.ID)
	}
	return e, nil
}

func nullToNil(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || bytes.Equal(r, []byte("null")) {
		return nil
	}
	return r
}
