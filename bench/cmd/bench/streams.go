package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// scriptedStreams serves a DynamoDB Streams endpoint (JSON 1.0 protocol)
// over records scripted in advance, so that the bridge's DynamoDB path can
// be timed without DynamoDB Local's own cost. Shards are open, like a
// live table's; their records are encoded once, up front.
type scriptedStreams struct {
	URL    string
	ARN    string
	table  string
	shards [][][]byte // shard -> records' JSON
	seqs   [][]string // shard -> records' sequence numbers
	srv    *http.Server
}

const scriptedRegion = "us-east-1"

// newScriptedStreams deals items round-robin to shards as INSERT records
// with a NEW_AND_OLD_IMAGES view, like DynamoDB Local's stream of the same
// writes.
func newScriptedStreams(table string, shards, items int) (*scriptedStreams, error) {
	s := &scriptedStreams{
		table:  table,
		ARN:    fmt.Sprintf("arn:aws:dynamodb:%s:000000000000:table/%s/stream/2026-01-01T00:00:00.000", scriptedRegion, table),
		shards: make([][][]byte, shards),
		seqs:   make([][]string, shards),
	}
	created := float64(time.Now().Unix())
	for i := range items {
		sh := i % shards
		seq := fmt.Sprintf("%021d", (i+1)*100)
		it := benchItem(i)
		rec := map[string]any{
			"eventID":      fmt.Sprintf("%08x-%04x-4000-8000-%012x", i, sh, i),
			"eventName":    "INSERT",
			"eventVersion": "1.1",
			"eventSource":  "aws:dynamodb",
			"awsRegion":    scriptedRegion,
			"dynamodb": map[string]any{
				"ApproximateCreationDateTime": created,
				"Keys":                        it.keysJSON(),
				"NewImage":                    it.json(),
				"SequenceNumber":              seq,
				"SizeBytes":                   it.size(),
				"StreamViewType":              "NEW_AND_OLD_IMAGES",
			},
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		s.shards[sh] = append(s.shards[sh], b)
		s.seqs[sh] = append(s.seqs[sh], seq)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.URL = "http://" + l.Addr().String()
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve)}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

func (s *scriptedStreams) Close() { _ = s.srv.Close() }

func (s *scriptedStreams) shardID(i int) string {
	return fmt.Sprintf("shardId-00000001760000000000-%08x", i)
}

func (s *scriptedStreams) serve(w http.ResponseWriter, r *http.Request) {
	_, op, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var in struct {
		StreamArn, ShardId, ShardIteratorType, SequenceNumber, ShardIterator, ExclusiveStartShardId string
		Limit                                                                                       int
		ShardFilter                                                                                 *struct{ Type, ShardId string }
	}
	if err := json.Unmarshal(body, &in); err != nil {
		streamsError(w, "SerializationException", err.Error())
		return
	}
	switch op {
	case "DescribeStream":
		s.describe(w, in.StreamArn, in.ExclusiveStartShardId, in.ShardFilter != nil)
	case "GetShardIterator":
		s.iterator(w, in.StreamArn, in.ShardId, in.ShardIteratorType, in.SequenceNumber)
	case "GetRecords":
		s.records(w, in.ShardIterator, in.Limit)
	default:
		streamsError(w, "UnknownOperationException", op)
	}
}

func (s *scriptedStreams) describe(w http.ResponseWriter, arn, after string, childFilter bool) {
	if arn != s.ARN {
		streamsError(w, "ResourceNotFoundException", "Requested resource not found: Stream: "+arn+" not found")
		return
	}
	type seqRange struct {
		StartingSequenceNumber string
	}
	type shard struct {
		ShardId             string
		SequenceNumberRange seqRange
	}
	var list []shard
	if !childFilter { // no shard here has children
		for i := range s.shards {
			id := s.shardID(i)
			if after != "" && id <= after {
				continue
			}
			start := "000000000000000000001"
			if len(s.seqs[i]) > 0 {
				start = s.seqs[i][0]
			}
			list = append(list, shard{ShardId: id, SequenceNumberRange: seqRange{start}})
		}
	}
	out := map[string]any{"StreamDescription": map[string]any{
		"StreamArn":      s.ARN,
		"StreamLabel":    "2026-01-01T00:00:00.000",
		"StreamStatus":   "ENABLED",
		"StreamViewType": "NEW_AND_OLD_IMAGES",
		"TableName":      s.table,
		"KeySchema": []any{
			map[string]any{"AttributeName": "pk", "KeyType": "HASH"},
			map[string]any{"AttributeName": "sk", "KeyType": "RANGE"},
		},
		"Shards": list,
	}}
	b, _ := json.Marshal(out)
	streamsJSON(w, b)
}

func (s *scriptedStreams) iterator(w http.ResponseWriter, arn, shardID, typ, seq string) {
	sh := -1
	for i := range s.shards {
		if s.shardID(i) == shardID {
			sh = i
		}
	}
	if arn != s.ARN || sh < 0 {
		streamsError(w, "ResourceNotFoundException", "Shard does not exist")
		return
	}
	pos := 0
	switch typ {
	case "TRIM_HORIZON":
	case "LATEST":
		pos = len(s.seqs[sh])
	case "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER":
		pos = len(s.seqs[sh])
		for i, q := range s.seqs[sh] { // equal widths: text order is number order
			if q > seq || (q == seq && typ == "AT_SEQUENCE_NUMBER") {
				pos = i
				break
			}
		}
	default:
		streamsError(w, "ValidationException", "bad iterator type "+typ)
		return
	}
	streamsJSON(w, []byte(`{"ShardIterator":"`+strconv.Itoa(sh)+"/"+strconv.Itoa(pos)+`"}`))
}

func (s *scriptedStreams) records(w http.ResponseWriter, iter string, limit int) {
	a, b, ok := strings.Cut(iter, "/")
	sh, err1 := strconv.Atoi(a)
	pos, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || sh < 0 || sh >= len(s.shards) || pos < 0 || pos > len(s.shards[sh]) {
		streamsError(w, "ValidationException", "Invalid ShardIterator")
		return
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	end := min(pos+limit, len(s.shards[sh]))
	out := make([]byte, 0, 64+(end-pos)*600)
	out = append(out, `{"NextShardIterator":"`...)
	out = strconv.AppendInt(out, int64(sh), 10)
	out = append(out, '/')
	out = strconv.AppendInt(out, int64(end), 10)
	out = append(out, `","Records":[`...)
	for i, rec := range s.shards[sh][pos:end] {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, rec...)
	}
	out = append(out, "]}"...)
	streamsJSON(w, out)
}

func streamsJSON(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

func streamsError(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(http.StatusBadRequest)
	b, _ := json.Marshal(map[string]string{"__type": "com.amazonaws.dynamodb.v20120810#" + code, "message": msg})
	_, _ = w.Write(b)
}
