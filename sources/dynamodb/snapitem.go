package dynamodb

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// readSequence is the sequence of the items of a page delivered when the
// stream stood at pos (see Source.streamPosition): pos + ":R", which sorts
// after pos and before every later sequence number. An item's earlier
// stream records were emitted before (their sequence is at most pos), its
// later ones come after (above pos), so a consumer that drops sequences at
// or below the last it applied for a key never drops a change newer than
// a read.
func readSequence(pos string) string { return pos + ":R" }

// noPosition is the stream position before any record was read.
var noPosition = strings.Repeat("0", 40)

// readID is the id of an item read by load job from a page answered at
// at: 'S', the job's id, ':', the answer's time in unix milliseconds, ':',
// a hash of the item's partition key. The sink's retries repeat it; an
// item read again (after a crash) is a new read, with its own id and
// sequence.
func readID(job string, at time.Time, partitionKey string) string {
	sum := sha256.Sum256([]byte(partitionKey))
	return "S" + job + ":" + strconv.FormatInt(at.UnixMilli(), 10) + ":" + hex.EncodeToString(sum[:16])
}

// streamValue turns a value of the DynamoDB API into the Streams API's
// type, which the envelope's conversion reads: one conversion for both.
func streamValue(av ddbtypes.AttributeValue) (types.AttributeValue, error) {
	switch v := av.(type) {
	case *ddbtypes.AttributeValueMemberS:
		return &types.AttributeValueMemberS{Value: v.Value}, nil
	case *ddbtypes.AttributeValueMemberN:
		return &types.AttributeValueMemberN{Value: v.Value}, nil
	case *ddbtypes.AttributeValueMemberB:
		return &types.AttributeValueMemberB{Value: v.Value}, nil
	case *ddbtypes.AttributeValueMemberBOOL:
		return &types.AttributeValueMemberBOOL{Value: v.Value}, nil
	case *ddbtypes.AttributeValueMemberNULL:
		return &types.AttributeValueMemberNULL{Value: v.Value}, nil
	case *ddbtypes.AttributeValueMemberSS:
		return &types.AttributeValueMemberSS{Value: v.Value}, nil
	case *ddbtypes.AttributeValueMemberNS:
		return &types.AttributeValueMemberNS{Value: v.Value}, nil
	case *ddbtypes.AttributeValueMemberBS:
		return &types.AttributeValueMemberBS{Value: v.Value}, nil
	case *ddbtypes.AttributeValueMemberL:
		out := make([]types.AttributeValue, len(v.Value))
		for i, e := range v.Value {
			var err error
			if out[i], err = streamValue(e); err != nil {
				return nil, err
			}
		}
		return &types.AttributeValueMemberL{Value: out}, nil
	case *ddbtypes.AttributeValueMemberM:
		m, err := streamItem(v.Value)
		if err != nil {
			return nil, err
		}
		return &types.AttributeValueMemberM{Value: m}, nil
	}
	return nil, fmt.Errorf("unsupported attribute value %T", av)
}

func streamItem(item map[string]ddbtypes.AttributeValue) (map[string]types.AttributeValue, error) {
	out := make(map[string]types.AttributeValue, len(item))
	for k, v := range item {
		sv, err := streamValue(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = sv
	}
	return out, nil
}

// readEvent turns a scanned item into a read event in the envelope the
// stream's records use: the same key, partition key and values.
func (si *streamInfo) readEvent(job, seq string, item map[string]ddbtypes.AttributeValue, at time.Time) (*cdc.Event, error) {
	img, err := streamItem(item)
	if err != nil {
		return nil, err
	}
	keys := make(map[string]types.AttributeValue, 2)
	for _, n := range []string{si.hashKey, si.rangeKey} {
		if n == "" {
			continue
		}
		v, ok := img[n]
		if !ok {
			return nil, fmt.Errorf("item without its key attribute %s", n)
		}
		keys[n] = v
	}
	key, err := appendImage(nil, keys)
	if err != nil {
		return nil, err
	}
	pk, err := si.partitionKey(keys)
	if err != nil {
		return nil, err
	}
	after, err := appendImage(nil, img)
	if err != nil {
		return nil, err
	}
	return &cdc.Event{
		ID:           readID(job, at, pk),
		Source:       si.source,
		Subject:      si.table,
		Time:         at.UTC(),
		PartitionKey: pk,
		Sequence:     seq,
		Op:           cdc.OpRead,
		Key:          key,
		After:        after,
		Info:         cdc.SourceInfo{Table: si.table, Snapshot: true},
	}, nil
}

// A LastEvaluatedKey is kept in the checkpoint store as JSON: each
// attribute as {"S": ...}, {"N": ...} or {"B": base64} (key attributes
// have only these types).
type keyValue struct {
	S *string `json:"S,omitempty"`
	N *string `json:"N,omitempty"`
	B *string `json:"B,omitempty"`
}

func encodeKey(k map[string]ddbtypes.AttributeValue) (map[string]keyValue, error) {
	if len(k) == 0 {
		return nil, nil
	}
	out := make(map[string]keyValue, len(k))
	for name, av := range k {
		switch v := av.(type) {
		case *ddbtypes.AttributeValueMemberS:
			out[name] = keyValue{S: &v.Value}
		case *ddbtypes.AttributeValueMemberN:
			out[name] = keyValue{N: &v.Value}
		case *ddbtypes.AttributeValueMemberB:
			s := base64.StdEncoding.EncodeToString(v.Value)
			out[name] = keyValue{B: &s}
		default:
			return nil, fmt.Errorf("key attribute %s has type %T (want S, N or B)", name, av)
		}
	}
	return out, nil
}

func decodeKey(k map[string]keyValue) (map[string]ddbtypes.AttributeValue, error) {
	if len(k) == 0 {
		return nil, nil
	}
	out := make(map[string]ddbtypes.AttributeValue, len(k))
	for name, v := range k {
		switch {
		case v.S != nil:
			out[name] = &ddbtypes.AttributeValueMemberS{Value: *v.S}
		case v.N != nil:
			out[name] = &ddbtypes.AttributeValueMemberN{Value: *v.N}
		case v.B != nil:
			b, err := base64.StdEncoding.DecodeString(*v.B)
			if err != nil {
				return nil, fmt.Errorf("key attribute %s: %w", name, err)
			}
			out[name] = &ddbtypes.AttributeValueMemberB{Value: b}
		default:
			b, _ := json.Marshal(v)
			return nil, fmt.Errorf("key attribute %s: %s has no S, N or B", name, b)
		}
	}
	return out, nil
}
