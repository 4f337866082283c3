package kinesis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/google/go-cmp/cmp"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/hashkey"
)

func TestParsePutRecordsOutput(t *testing.T) {
	s0 := &shard{id: "shardId-000000000000"}
	mk := func(n int) *batch {
		b := &batch{}
		for range n {
			b.info = append(b.info, entry{shard: s0})
			b.entries = append(b.entries, types.PutRecordsRequestEntry{})
		}
		return b
	}
	tests := []struct {
		name string
		in   string
		n    int
		want []entryResult
		err  bool
	}{
		{"compact", `{"FailedRecordCount":0,"Records":[{"SequenceNumber":"4960","ShardId":"shardId-000000000000"}]}`, 1,
			[]entryResult{{shardID: "shardId-000000000000"}}, false},
		{"spaces, order, extra fields", "{ \"EncryptionType\" : \"KMS\", \"Records\" : [ { \"ShardId\" : \"shardId-000000000001\" , \"SequenceNumber\":\"1\", \"Extra\": {\"a\":[1,2,{\"b\":\"]}\"}]} } ,\n {\"ErrorCode\":\"ProvisionedThroughputExceededException\",\"ErrorMessage\":\"Rate exceeded \\\"x\\\"\"} ], \"FailedRecordCount\": 1 }", 2,
			[]entryResult{{shardID: "shardId-000000000001"}, {code: "ProvisionedThroughputExceededException", msg: `Rate exceeded "x"`}}, false},
		{"nulls", `{"Records":[{"SequenceNumber":null,"ShardId":null,"ErrorCode":"InternalFailure","ErrorMessage":null}]}`, 1,
			[]entryResult{{code: "InternalFailure"}}, false},
		{"entry without proof of acceptance", `{"Records":[{"ShardId":"shardId-000000000000"},{}]}`, 2,
			[]entryResult{{shardID: "shardId-000000000000", code: "MissingResult", msg: "the answer's entry has neither an error code nor a shard id and sequence number"},
				{code: "MissingResult", msg: "the answer's entry has neither an error code nor a shard id and sequence number"}}, false},
		{"count mismatch", `{"Records":[{"ShardId":"a"}]}`, 2, nil, true},
		{"no records", `{"FailedRecordCount":0}`, 1, nil, true},
		{"truncated", `{"Records":[{"ShardId":"shardId-0000`, 1, nil, true},
		{"empty", ``, 1, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mk(tt.n)
			err := parsePutRecordsOutput([]byte(tt.in), b)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err == nil {
				if diff := cmp.Diff(tt.want, b.res, cmp.AllowUnexported(entryResult{})); diff != "" {
					t.Errorf("results (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestParsePutRecordsOutputDoesNotAllocatePerEntry(t *testing.T) {
	s0 := &shard{id: "shardId-000000000007"}
	b := &batch{}
	var sb strings.Builder
	sb.WriteString(`{"FailedRecordCount":0,"Records":[`)
	for i := range 500 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"SequenceNumber":"4959%052d","ShardId":"shardId-000000000007"}`, i)
		b.info = append(b.info, entry{shard: s0})
		b.entries = append(b.entries, types.PutRecordsRequestEntry{})
	}
	sb.WriteString(`]}`)
	data := []byte(sb.String())
	b.res = make([]entryResult, 0, 500)
	allocs := testing.AllocsPerRun(20, func() {
		if err := parsePutRecordsOutput(data, b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("%v allocations to parse 500 entries", allocs)
	}
}

func TestAPIError(t *testing.T) {
	tests := []struct {
		status int
		header string
		body   string
		code   string
		class  errClass
	}{
		{400, "ResourceNotFoundException:http://internal.amazon.com/", `{"__type":"ResourceNotFoundException","message":"Stream x not found"}`, "ResourceNotFoundException", classFatal},
		{400, "", `{"__type":"com.amazonaws.kinesis#KMSDisabledException","Message":"disabled"}`, "KMSDisabledException", classFatal},
		{400, "", `{"__type":"ValidationException","message":"bad"}`, "ValidationException", classInvalid},
		{400, "", `{"__type":"ProvisionedThroughputExceededException"}`, "ProvisionedThroughputExceededException", classThrottle},
		{400, "", `{"__type":"ExpiredTokenException"}`, "ExpiredTokenException", classExpired},
		{503, "", `<html>busy</html>`, "HTTP503", classRetry},
		{500, "", `{"__type":"InternalFailure"}`, "InternalFailure", classRetry},
		{400, "", `{"__type":"BrandNewException"}`, "BrandNewException", classRetry},
	}
	for _, tt := range tests {
		resp := &http.Response{StatusCode: tt.status, Header: http.Header{}}
		if tt.header != "" {
			resp.Header.Set("X-Amzn-Errortype", tt.header)
		}
		err := newAPIError(resp, []byte(tt.body))
		if got := errorCode(err); got != tt.code {
			t.Errorf("%s: code %q, want %q", tt.body, got, tt.code)
		}
		if got := classify(fmt.Errorf("wrapped: %w", err)); got != tt.class {
			t.Errorf("%s: class %d, want %d", tt.body, got, tt.class)
		}
	}
}

func TestClassifyTransportErrors(t *testing.T) {
	for _, err := range []error{
		context.DeadlineExceeded,
		&net.OpError{Op: "read", Err: syscall.ECONNRESET},
		io.ErrUnexpectedEOF,
		&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED},
		errors.New("something odd"),
	} {
		if c := classify(err); c != classRetry {
			t.Errorf("%v: class %d, want retry", err, c)
		}
	}
}

func TestPredictShard(t *testing.T) {
	ranges := [][2]string{
		{"0", "113427455640312821154458202477256070484"},
		{"113427455640312821154458202477256070485", "226854911280625642308916404954512140969"},
		{"226854911280625642308916404954512140970", "340282366920938463463374607431768211455"},
	}
	var list []types.Shard
	for i, r := range ranges {
		list = append(list, types.Shard{ShardId: aws.String(fmt.Sprintf("shardId-%012d", i)),
			HashKeyRange: &types.HashKeyRange{StartingHashKey: aws.String(r[0]), EndingHashKey: aws.String(r[1])}})
	}
	// A closed parent is ignored.
	list = append(list, types.Shard{ShardId: aws.String("closed"), HashKeyRange: &types.HashKeyRange{StartingHashKey: aws.String("0"), EndingHashKey: aws.String("1")},
		SequenceNumberRange: &types.SequenceNumberRange{StartingSequenceNumber: aws.String("1"), EndingSequenceNumber: aws.String("2")}})
	m, err := newShardMap(list, nil, 1, newLimits(0.9, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	// MD5("a") = 0cc175b9c0f1b6a831c399e269772661, below the first boundary.
	// MD5("b") = 92eb5ffee6ae2fec3ad71c777531578f, in the second range.
	// MD5("e") = e1671797c52e15f763380b45e841ec32, in the third range.
	for pk, want := range map[string]string{"a": "shardId-000000000000", "b": "shardId-000000000001", "e": "shardId-000000000002"} {
		if got := m.predict(hashkey.Of(pk)).id; got != want {
			t.Errorf("predict(%q) = %s, want %s", pk, got, want)
		}
	}
	if len(m.shards) != 3 {
		t.Errorf("%d open shards", len(m.shards))
	}
	if _, err := hashkey.Parse("340282366920938463463374607431768211456"); err == nil {
		t.Error("2^128 accepted as a hash key")
	}
}

// TestPartitionKeyTakenAsGiven: the record's key is the event's, as the
// source built it; a key Kinesis would refuse, or one the envelope would
// carry differently, is refused, and the event is left as it was.
func TestPartitionKeyTakenAsGiven(t *testing.T) {
	long := strings.Repeat("x", 300)
	hashed := cdc.PartitionKey("public.t", []byte("[\""+long+"\"]"))
	tests := []struct {
		pk string
		ok bool
	}{
		{"public.t:[1]", true},
		{"public.t:*", true},
		{hashed, true},
		{strings.Repeat("é", 128), true}, // 256 bytes
		{"", false},
		{"public.t:[\"" + long + "\"]", false},
		{strings.Repeat("é", 128) + "x", false},
		{"bad\xffkey", false},
	}
	for _, tt := range tests {
		e := &cdc.Event{ID: "1", Source: "/cdcbridge/test", Subject: "public.t", PartitionKey: tt.pk, Op: cdc.OpUpdate, Sequence: "1"}
		r, err := newRecord(e)
		if (err == nil) != tt.ok {
			t.Errorf("key %.40q: err = %v, want ok %v", tt.pk, err, tt.ok)
		}
		if e.PartitionKey != tt.pk {
			t.Errorf("key %.40q: the event's key became %.40q", tt.pk, e.PartitionKey)
		}
		if err != nil {
			continue
		}
		if r.pk != tt.pk || r.hash != hashkey.Of(tt.pk) {
			t.Errorf("key %.40q: record key %.40q", tt.pk, r.pk)
		}
		env, err := cdc.Decode(r.buf)
		if err != nil || env.PartitionKey != tt.pk {
			t.Errorf("key %.40q: envelope key %.40q (%v)", tt.pk, env.PartitionKey, err)
		}
		freeRecord(r)
	}
}

func TestRetryBackoffBounds(t *testing.T) {
	p, err := New(Config{Stream: "s"}, kinesis.New(kinesis.Options{}), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n < 40; n++ {
		ceiling := min(100*time.Millisecond<<min(n-1, 20), 10*time.Second)
		for range 50 {
			if d := p.loop.reqs.retry.Delay(n); d < 0 || d > ceiling {
				t.Fatalf("backoff(attempt %d) = %v, outside [0, %v]", n, d, ceiling)
			}
		}
	}
}

func TestConfigValidation(t *testing.T) {
	c := Config{Stream: "s"}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.Linger != 50*time.Millisecond || c.MaxInFlight != 8 || c.Ordering != OrderingKey || c.Oversize != OversizeDLQ ||
		c.MaxInFlightBytes != 64<<20 || c.MaxRequestBytes != 5<<20 || c.ShardHeadroom != 0.9 || c.RequestTimeout != 10*time.Second || c.ConnectTimeout != 2*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	bad := Config{Ordering: "row", Oversize: "drop", MaxRequestBytes: 11 << 20, ShardHeadroom: 2, Linger: -1, CompressAggregates: true}
	err := bad.validate()
	for _, w := range []string{"Stream", "Ordering", "Oversize", "MaxRequestBytes", "ShardHeadroom", "Linger", "CompressAggregates needs Aggregate"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("invalid config: %v, want it to name %s", err, w)
		}
	}
	if n, a := (&Config{Stream: "arn:aws:kinesis:us-east-1:1:stream/orders"}).streamParams(); n != nil || a == nil {
		t.Error("an ARN is sent as StreamName")
	}
	if l := (&Config{Stream: "arn:aws:kinesis:us-east-1:1:stream/orders"}).streamLabel(); l != "orders" {
		t.Errorf("label %q", l)
	}
}

func TestTableBarrierState(t *testing.T) {
	var ts tableState
	r := func(trunc bool) *record { return &record{truncate: trunc} }
	a, b, tr, c := r(false), r(false), r(true), r(false)
	if !ts.admit(a) || !ts.admit(b) {
		t.Fatal("rows before any truncate must go")
	}
	if ts.admit(tr) || ts.admit(c) {
		t.Fatal("truncate must wait for earlier rows, later rows for the truncate")
	}
	var released []*record
	rel := func(x *record) { released = append(released, x) }
	ts.done(a, rel)
	if len(released) != 0 {
		t.Fatal("truncate released before every earlier row was accepted")
	}
	ts.done(b, rel)
	if len(released) != 1 || released[0] != tr {
		t.Fatalf("released %v, want the truncate alone", released)
	}
	ts.done(tr, rel)
	if len(released) != 2 || released[1] != c {
		t.Fatal("row after the truncate not released once it was accepted")
	}
	ts.done(c, rel)
	if !ts.idle() {
		t.Fatal("not idle")
	}
}

func TestCodeLabelIsBounded(t *testing.T) {
	for code, want := range map[string]string{
		"ProvisionedThroughputExceededException": "ProvisionedThroughputExceededException",
		"InternalFailure":                        "InternalFailure",
		"KMSThrottlingException":                 "KMSThrottlingException",
		"timeout":                                "timeout",
		"HTTP503":                                "HTTP503",
		"SomethingNewException":                  "other",
		"public.t:[42]":                          "other",
	} {
		if got := codeLabel(code); got != want {
			t.Errorf("codeLabel(%q) = %q, want %q", code, got, want)
		}
	}
}
