package dynamodb

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// streamInfo is what every event of a stream shares.
type streamInfo struct {
	arn      string
	region   string
	table    string
	label    string
	viewType string
	hashKey  string // key schema, for the partition key's value order
	rangeKey string
	source   string // CloudEvents source: /cdcbridge/dynamodb/<region>/<table>
}

// parseStreamARN splits arn:PARTITION:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL.
func parseStreamARN(arn string) (region, table, label string, err error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "dynamodb" {
		return "", "", "", fmt.Errorf("%q is not a DynamoDB stream ARN (want arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)", arn)
	}
	res := strings.Split(parts[5], "/")
	if len(res) != 4 || res[0] != "table" || res[1] == "" || res[2] != "stream" || res[3] == "" {
		return "", "", "", fmt.Errorf("%q is not a DynamoDB stream ARN (want arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)", arn)
	}
	return parts[3], res[1], res[3], nil
}

// ttlPrincipal is the identity of deletions made by Time to Live.
const ttlPrincipal = "dynamodb.amazonaws.com"

// record is one converted stream record.
type record struct {
	event   *cdc.Event
	padded  string // sequence number padded to 40 digits
	created time.Time
}

// convert turns a stream record of shardID into an event. The event's
// OnAck is left for the caller.
func (si *streamInfo) convert(shardID string, r *types.Record) (record, error) {
	sr := r.Dynamodb
	if sr == nil || sr.SequenceNumber == nil {
		return record{}, errors.New("record without dynamodb.SequenceNumber")
	}
	seq := *sr.SequenceNumber
	padded, err := cdc.PadSequence(seq)
	if err != nil {
		return record{}, err
	}
	id := aws.ToString(r.EventID)
	if id == "" {
		return record{}, fmt.Errorf("record %s without eventID", seq)
	}
	var op cdc.Op
	switch r.EventName {
	case types.OperationTypeInsert:
		op = cdc.OpInsert
	case types.OperationTypeModify:
		op = cdc.OpUpdate
	case types.OperationTypeRemove:
		op = cdc.OpDelete
	default:
		return record{}, fmt.Errorf("record %s: unknown eventName %q", seq, r.EventName)
	}
	if len(sr.Keys) == 0 {
		return record{}, fmt.Errorf("record %s: no Keys", seq)
	}
	key, err := appendImage(nil, sr.Keys)
	if err != nil {
		return record{}, fmt.Errorf("record %s: Keys: %w", seq, err)
	}
	pk, err := si.partitionKey(sr.Keys)
	if err != nil {
		return record{}, fmt.Errorf("record %s: Keys: %w", seq, err)
	}
	e := &cdc.Event{
		ID:           id,
		Source:       si.source,
		Subject:      si.table,
		PartitionKey: pk,
		Sequence:     padded,
		Op:           op,
		Key:          key,
		Info: cdc.SourceInfo{
			Table:          si.table,
			ShardID:        shardID,
			SequenceNumber: seq,
			EventName:      string(r.EventName),
			ViewType:       string(sr.StreamViewType),
		},
	}
	if e.Info.ViewType == "" {
		e.Info.ViewType = si.viewType
	}
	if sr.ApproximateCreationDateTime != nil {
		e.Time = sr.ApproximateCreationDateTime.UTC()
	}
	if sr.OldImage != nil {
		if e.Before, err = appendImage(nil, sr.OldImage); err != nil {
			return record{}, fmt.Errorf("record %s: OldImage: %w", seq, err)
		}
	}
	if sr.NewImage != nil {
		if e.After, err = appendImage(nil, sr.NewImage); err != nil {
			return record{}, fmt.Errorf("record %s: NewImage: %w", seq, err)
		}
	}
	if ui := r.UserIdentity; ui != nil && aws.ToString(ui.Type) == "Service" && aws.ToString(ui.PrincipalId) == ttlPrincipal {
		e.Info.TTL = true
	}
	return record{event: e, padded: padded, created: e.Time}, nil
}

// partitionKey is table + ":" + the canonical JSON array of the hash and
// range key values, in key-schema order. Numbers are canonicalized so
// that one item always maps to one key whatever notation wrote it.
func (si *streamInfo) partitionKey(keys map[string]types.AttributeValue) (string, error) {
	names := make([]string, 0, 2)
	if si.hashKey != "" {
		names = append(names, si.hashKey)
		if si.rangeKey != "" {
			names = append(names, si.rangeKey)
		}
	}
	if len(names) != len(keys) || !hasAll(keys, names) {
		// The key schema is unknown or does not match the record: fall back
		// to the names in sorted order, still one key per item.
		names = names[:0]
		for k := range keys {
			names = append(names, k)
		}
		slices.Sort(names)
	}
	b := make([]byte, 0, 64)
	b = append(b, '[')
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		switch v := keys[n].(type) {
		case *types.AttributeValueMemberN:
			b, err = appendCanonicalNumber(b, v.Value)
		default:
			b, err = appendValue(b, v, 0)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", n, err)
		}
	}
	b = append(b, ']')
	return cdc.PartitionKey(si.table, b), nil
}

func hasAll(m map[string]types.AttributeValue, names []string) bool {
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return false
		}
	}
	return true
}
