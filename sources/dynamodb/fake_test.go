package dynamodb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// fakeStreams is an httptest server speaking the DynamoDB Streams JSON
// protocol (DynamoDBStreams_20120810.*) over a scripted shard tree, with
// faults DynamoDB Local does not produce on demand: splits, aged-out
// shards, expired iterators, trimmed records, empty pages, throttling and
// 5xx. With an upstream it stands in front of DynamoDB Local instead and
// injects the faults into real traffic.
type fakeStreams struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	arn      string
	table    string
	viewType string
	hashKey  string
	rangeKey string
	status   string
	shards   []*fakeShard
	iters    map[string]*fakeIter
	nextIter int
	seq      int64 // last sequence number handed out (written as 21 digits, like AWS's)

	childFilter  bool          // accept the CHILD_SHARDS filter
	pageSize     int           // most records per page (besides Limit)
	describePage int           // most shards per DescribeStream page (besides Limit; 0: 100)
	iterTTL      time.Duration // iterators older than this expire (0: never)

	// Scripted faults: the next N calls of an operation fail with code.
	faults map[string][]fakeFault
	// faultEvery makes every Nth call of an operation fail (proxy mode).
	faultEvery map[string]fakeFault
	// stalls holds the next N calls of an operation for stallFor (a
	// server that stops answering).
	stalls   map[string]int
	stallFor time.Duration
	// proxyLimit lowers the Limit of proxied GetRecords calls (more pages).
	proxyLimit int
	// emptyEvery answers every Nth GetRecords with an empty page that
	// returns the same position (proxy mode).
	emptyEvery int

	calls      map[string]int
	inflight   map[string]int // GetRecords in progress per shard
	maxReaders map[string]int // most concurrent GetRecords seen per shard
	iterTypes  []string       // GetShardIterator requests, "shard type seq"
	firstRead  map[string]time.Time
	lastServed map[string]time.Time // when a shard's end (null iterator) was served

	upstream *httputil.ReverseProxy
}

type fakeFault struct {
	code   string
	status int
	n      int // for faultEvery: period
}

type fakeShard struct {
	id, parent string
	records    []fakeRecord
	closed     bool
	hidden     bool // left the stream: not listed, ResourceNotFound
	trimmed    int  // records[:trimmed] expired
	emptyPages int  // empty pages served before any record (countdown)
}

type fakeRecord struct {
	seq  string
	json []byte
}

type fakeIter struct {
	shard   *fakeShard
	pos     int
	created time.Time
	proxied string // proxy mode: the upstream iterator
}

const (
	fakeRegion = "us-east-1"
	fakeTable  = "orders"
)

func newFakeStreams(t testing.TB) *fakeStreams {
	f := &fakeStreams{
		t:          t,
		table:      fakeTable,
		arn:        "arn:aws:dynamodb:" + fakeRegion + ":123456789012:table/" + fakeTable + "/stream/2026-11-26T10:00:00.000",
		viewType:   "NEW_AND_OLD_IMAGES",
		hashKey:    "pk",
		rangeKey:   "sk",
		status:     "ENABLED",
		iters:      map[string]*fakeIter{},
		seq:        0,
		pageSize:   1000,
		faults:     map[string][]fakeFault{},
		faultEvery: map[string]fakeFault{},
		stalls:     map[string]int{},
		calls:      map[string]int{},
		inflight:   map[string]int{},
		maxReaders: map[string]int{},
		firstRead:  map[string]time.Time{},
		lastServed: map[string]time.Time{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// proxyTo makes f forward to DynamoDB Local whatever it does not fault.
func (f *fakeStreams) proxyTo(d *testenv.DynamoDBLocal) {
	u, err := url.Parse(d.Endpoint)
	if err != nil {
		f.t.Fatal(err)
	}
	f.upstream = httputil.NewSingleHostReverseProxy(u)
}

func (f *fakeStreams) client() *dynamodbstreams.Client {
	return dynamodbstreams.NewFromConfig(testenv.AWSConfig(), func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = aws.String(f.srv.URL)
	})
}

func (f *fakeStreams) ddbClient() *dynamodb.Client {
	return dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(f.srv.URL)
	})
}

// addShard adds a shard (listed in the order added).
func (f *fakeStreams) addShard(id, parent string) *fakeShard {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := &fakeShard{id: id, parent: parent}
	f.shards = append(f.shards, sh)
	return sh
}

func (f *fakeStreams) shard(id string) *fakeShard {
	for _, sh := range f.shards {
		if sh.id == id {
			return sh
		}
	}
	return nil
}

// fakeChange describes one stream record to script.
type fakeChange struct {
	event    string // INSERT, MODIFY, REMOVE
	keys     map[string]any
	oldImage map[string]any
	newImage map[string]any
	created  time.Time
	ttl      bool
}

// put appends a record to shard id and returns its sequence number.
func (f *fakeStreams) put(id string, c fakeChange) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := f.shard(id)
	if sh == nil {
		f.t.Fatalf("fake: no shard %s", id)
	}
	if sh.closed {
		f.t.Fatalf("fake: shard %s is closed", id)
	}
	f.seq++
	seq := fmt.Sprintf("4%020d", f.seq*10)
	if c.created.IsZero() {
		c.created = time.Now()
	}
	sr := map[string]any{
		"ApproximateCreationDateTime": float64(c.created.UnixMilli()) / 1000,
		"Keys":                        c.keys,
		"SequenceNumber":              seq,
		"SizeBytes":                   100,
		"StreamViewType":              f.viewType,
	}
	if c.oldImage != nil && (f.viewType == "OLD_IMAGE" || f.viewType == "NEW_AND_OLD_IMAGES") {
		sr["OldImage"] = c.oldImage
	}
	if c.newImage != nil && (f.viewType == "NEW_IMAGE" || f.viewType == "NEW_AND_OLD_IMAGES") {
		sr["NewImage"] = c.newImage
	}
	rec := map[string]any{
		"eventID":      fmt.Sprintf("ev-%s-%s", id, seq),
		"eventName":    c.event,
		"eventVersion": "1.1",
		"eventSource":  "aws:dynamodb",
		"awsRegion":    fakeRegion,
		"dynamodb":     sr,
	}
	if c.ttl {
		rec["userIdentity"] = map[string]any{"type": "Service", "principalId": "dynamodb.amazonaws.com"}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		f.t.Fatal(err)
	}
	sh.records = append(sh.records, fakeRecord{seq: seq, json: b})
	return seq
}

// close ends a shard: after its last record, readers get a null iterator.
func (f *fakeStreams) close(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shard(id).closed = true
}

// fail makes the next n calls of op fail with code (HTTP status).
func (f *fakeStreams) fail(op, code string, status, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.faults[op] = append(f.faults[op], fakeFault{code: code, status: status})
	}
}

func (f *fakeStreams) callCount(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeStreams) serve(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	_, op, _ := strings.Cut(target, ".")
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	var in map[string]any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			writeErr(w, 400, "SerializationException", err.Error())
			return
		}
	}
	f.mu.Lock()
	f.calls[op]++
	if f.stalls[op] > 0 {
		f.stalls[op]--
		d := f.stallFor
		f.mu.Unlock()
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		writeErr(w, 500, "InternalServerError", "stalled")
		return
	}
	if q := f.faults[op]; len(q) > 0 {
		ft := q[0]
		f.faults[op] = q[1:]
		f.mu.Unlock()
		writeErr(w, ft.status, ft.code, "injected fault")
		return
	}
	if ft, ok := f.faultEvery[op]; ok && ft.n > 0 && f.calls[op]%ft.n == 0 {
		f.mu.Unlock()
		writeErr(w, ft.status, ft.code, "injected fault")
		return
	}
	if f.upstream != nil {
		if op == "GetRecords" && f.emptyEvery > 0 && f.calls[op]%f.emptyEvery == 0 {
			f.mu.Unlock()
			// The same iterator again: an empty page that moves nothing.
			writeJSON(w, map[string]any{"Records": []any{}, "NextShardIterator": in["ShardIterator"]})
			return
		}
		if op == "GetRecords" && f.proxyLimit > 0 {
			in["Limit"] = f.proxyLimit
			body, _ = json.Marshal(in)
			r.ContentLength = int64(len(body))
		}
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.upstream.ServeHTTP(w, r)
		return
	}
	var status int
	var out any
	switch op {
	case "DescribeStream":
		status, out = f.describeStream(in)
	case "GetShardIterator":
		status, out = f.getShardIterator(in)
	case "GetRecords":
		f.mu.Unlock()
		f.getRecords(w, in)
		return
	case "DescribeTable":
		status, out = f.describeTable(in)
	default:
		status, out = 400, errBody("UnknownOperationException", op)
	}
	f.mu.Unlock()
	if status != 200 {
		e := out.([2]string)
		writeErr(w, status, e[0], e[1])
		return
	}
	writeJSON(w, out)
}

func errBody(code, msg string) [2]string { return [2]string{code, msg} }

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"__type":"com.amazonaws.dynamodb.v20120810#%s","message":%q}`, code, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeErr(w, 500, "InternalServerError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Write(b)
}

func str(in map[string]any, k string) string {
	s, _ := in[k].(string)
	return s
}

// describeStream is called with f.mu held.
func (f *fakeStreams) describeStream(in map[string]any) (int, any) {
	if str(in, "StreamArn") != f.arn || f.status == "GONE" {
		return 400, errBody("ResourceNotFoundException", "Requested resource not found: Stream: "+str(in, "StreamArn")+" not found")
	}
	var list []*fakeShard
	for _, sh := range f.shards {
		if !sh.hidden {
			list = append(list, sh)
		}
	}
	if filter, ok := in["ShardFilter"].(map[string]any); ok {
		if !f.childFilter {
			return 400, errBody("ValidationException", "ShardFilter is not supported")
		}
		parent := str(filter, "ShardId")
		var kids []*fakeShard
		for _, sh := range list {
			if sh.parent == parent {
				kids = append(kids, sh)
			}
		}
		list = kids
	}
	if start := str(in, "ExclusiveStartShardId"); start != "" {
		for i, sh := range list {
			if sh.id == start {
				list = list[i+1:]
				break
			}
		}
	}
	limit := 100
	if l, ok := in["Limit"].(float64); ok && int(l) < limit {
		limit = int(l)
	}
	if f.describePage > 0 && f.describePage < limit {
		limit = f.describePage
	}
	desc := map[string]any{
		"StreamArn":      f.arn,
		"StreamLabel":    "2026-11-26T10:00:00.000",
		"StreamStatus":   f.status,
		"StreamViewType": f.viewType,
		"TableName":      f.table,
		"KeySchema": []any{
			map[string]any{"AttributeName": f.hashKey, "KeyType": "HASH"},
			map[string]any{"AttributeName": f.rangeKey, "KeyType": "RANGE"},
		},
	}
	if len(list) > limit {
		desc["LastEvaluatedShardId"] = list[limit-1].id
		list = list[:limit]
	}
	shards := []any{}
	for _, sh := range list {
		rng := map[string]any{"StartingSequenceNumber": "100000000000000000000"}
		if len(sh.records) > 0 {
			rng["StartingSequenceNumber"] = sh.records[0].seq
		}
		if sh.closed {
			end := "100000000000000000000"
			if n := len(sh.records); n > 0 {
				end = sh.records[n-1].seq
			}
			rng["EndingSequenceNumber"] = end
		}
		d := map[string]any{"ShardId": sh.id, "SequenceNumberRange": rng}
		if sh.parent != "" {
			d["ParentShardId"] = sh.parent
		}
		shards = append(shards, d)
	}
	desc["Shards"] = shards
	return 200, map[string]any{"StreamDescription": desc}
}

func (f *fakeStreams) describeTable(in map[string]any) (int, any) {
	if str(in, "TableName") != f.table {
		return 400, errBody("ResourceNotFoundException", "Requested resource not found: Table: "+str(in, "TableName")+" not found")
	}
	return 200, map[string]any{"Table": map[string]any{
		"TableName":           f.table,
		"TableStatus":         "ACTIVE",
		"LatestStreamArn":     f.arn,
		"StreamSpecification": map[string]any{"StreamEnabled": true, "StreamViewType": f.viewType},
	}}
}

func (f *fakeStreams) newIter(sh *fakeShard, pos int) string {
	f.nextIter++
	id := "it-" + strconv.Itoa(f.nextIter)
	f.iters[id] = &fakeIter{shard: sh, pos: pos, created: time.Now()}
	return id
}

// getShardIterator is called with f.mu held.
func (f *fakeStreams) getShardIterator(in map[string]any) (int, any) {
	sh := f.shard(str(in, "ShardId"))
	if str(in, "StreamArn") != f.arn || sh == nil || sh.hidden || f.status == "GONE" {
		return 400, errBody("ResourceNotFoundException", "Shard does not exist")
	}
	typ, seq := str(in, "ShardIteratorType"), str(in, "SequenceNumber")
	f.iterTypes = append(f.iterTypes, strings.TrimSpace(sh.id+" "+typ+" "+seq))
	var pos int
	switch typ {
	case "TRIM_HORIZON":
		pos = sh.trimmed
	case "LATEST":
		pos = len(sh.records)
	case "AFTER_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER":
		want, err := cdc.PadSequence(seq)
		if err != nil {
			return 400, errBody("ValidationException", "bad sequence number")
		}
		pos = len(sh.records)
		for i, r := range sh.records {
			got, _ := cdc.PadSequence(r.seq)
			if (typ == "AT_SEQUENCE_NUMBER" && got >= want) || (typ == "AFTER_SEQUENCE_NUMBER" && got > want) {
				pos = i
				break
			}
		}
		if pos < sh.trimmed {
			return 400, errBody("TrimmedDataAccessException", "the requested position is beyond the trim horizon")
		}
	default:
		return 400, errBody("ValidationException", "bad iterator type "+typ)
	}
	return 200, map[string]any{"ShardIterator": f.newIter(sh, pos)}
}

func (f *fakeStreams) getRecords(w http.ResponseWriter, in map[string]any) {
	f.mu.Lock()
	it, ok := f.iters[str(in, "ShardIterator")]
	if !ok {
		f.mu.Unlock()
		writeErr(w, 400, "ValidationException", "Invalid ShardIterator")
		return
	}
	// An iterator stays valid after use, as DynamoDB Streams' do (until
	// they expire): a call retried after a lost answer asks again with
	// the same one.
	sh := it.shard
	switch {
	case sh.hidden || f.status == "GONE":
		f.mu.Unlock()
		writeErr(w, 400, "ResourceNotFoundException", "Shard does not exist")
		return
	case f.iterTTL > 0 && time.Since(it.created) > f.iterTTL:
		f.mu.Unlock()
		writeErr(w, 400, "ExpiredIteratorException", "Iterator expired")
		return
	case it.pos < sh.trimmed:
		f.mu.Unlock()
		writeErr(w, 400, "TrimmedDataAccessException", "records trimmed")
		return
	}
	f.inflight[sh.id]++
	f.maxReaders[sh.id] = max(f.maxReaders[sh.id], f.inflight[sh.id])
	if _, ok := f.firstRead[sh.id]; !ok {
		f.firstRead[sh.id] = time.Now()
	}
	limit := f.pageSize
	if l, ok := in["Limit"].(float64); ok && int(l) < limit {
		limit = int(l)
	}
	var buf bytes.Buffer
	buf.WriteString(`{"Records":[`)
	pos := it.pos
	if sh.emptyPages > 0 {
		sh.emptyPages--
	} else {
		for n := 0; n < limit && pos < len(sh.records); n++ {
			if n > 0 {
				buf.WriteByte(',')
			}
			buf.Write(sh.records[pos].json)
			pos++
		}
	}
	buf.WriteByte(']')
	if sh.closed && pos == len(sh.records) {
		f.lastServed[sh.id] = time.Now()
	} else {
		fmt.Fprintf(&buf, `,"NextShardIterator":%q`, f.newIter(sh, pos))
	}
	buf.WriteByte('}')
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Write(buf.Bytes())
	f.mu.Lock()
	f.inflight[sh.id]--
	f.mu.Unlock()
}
