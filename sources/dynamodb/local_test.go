package dynamodb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
	ddbstore "github.com/cdcbridge/cdcbridge/checkpoint/dynamodb"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// Tests against DynamoDB Local, whose Streams API is AWS's own.

// createTable makes a table with hash key pk (S) and range key sk (N) and
// a stream of viewType ("" for none).
func createTable(t testing.TB, db *dynamodb.Client, prefix string, viewType ddbtypes.StreamViewType) string {
	t.Helper()
	name := testenv.UniqueName(prefix)
	in := &dynamodb.CreateTableInput{
		TableName: aws.String(name),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: ddbtypes.ScalarAttributeTypeN},
		},
		KeySchema: []ddbtypes.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: ddbtypes.KeyTypeRange},
		},
		BillingMode: ddbtypes.BillingModePayPerRequest,
	}
	if viewType != "" {
		in.StreamSpecification = &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: viewType}
	}
	if _, err := db.CreateTable(context.Background(), in); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	return name
}

func S(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }
func N(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberN{Value: v} }

func itemKey(pk string, sk int) map[string]ddbtypes.AttributeValue {
	return map[string]ddbtypes.AttributeValue{"pk": S(pk), "sk": N(fmt.Sprint(sk))}
}

// jsonEqual compares JSON documents, numbers by their exact text.
func jsonEqual(t testing.TB, what string, want string, got []byte) {
	t.Helper()
	dec := func(b []byte) any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("%s: %s: %v", what, b, err)
		}
		return v
	}
	if diff := cmp.Diff(dec([]byte(want)), dec(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

// DynamoDB returns 9.9999999999999999999999999999999999999E+125 in plain
// notation: the same value, its own spelling.
var hugePlain = strings.Repeat("9", 38) + strings.Repeat("0", 88)

// TestLocalEveryType writes an item with every attribute type, updates and
// deletes it, reading through the table's name (DescribeTable).
func TestLocalEveryType(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	db := d.Client()
	ctx := context.Background()
	table := createTable(t, db, "types", ddbtypes.StreamViewTypeNewAndOldImages)
	item := map[string]ddbtypes.AttributeValue{
		"pk":    S("a"),
		"sk":    N("1"),
		"str":   S("héllo \"world\"\n"),
		"big":   N("123456789012345678901234567890.12345678"),
		"neg":   N("-0.000000000000000000000000000000000001"),
		"huge":  N("9.9999999999999999999999999999999999999E+125"),
		"bin":   &ddbtypes.AttributeValueMemberB{Value: []byte{0, 1, 2, 0xff}},
		"yes":   &ddbtypes.AttributeValueMemberBOOL{Value: true},
		"nil":   &ddbtypes.AttributeValueMemberNULL{Value: true},
		"ss":    &ddbtypes.AttributeValueMemberSS{Value: []string{"b", "a"}},
		"ns":    &ddbtypes.AttributeValueMemberNS{Value: []string{"2", "1.5"}},
		"bs":    &ddbtypes.AttributeValueMemberBS{Value: [][]byte{{1}, {2}}},
		"list":  &ddbtypes.AttributeValueMemberL{Value: []ddbtypes.AttributeValue{N("1"), S("x"), &ddbtypes.AttributeValueMemberL{Value: []ddbtypes.AttributeValue{&ddbtypes.AttributeValueMemberBOOL{Value: false}}}}},
		"map":   &ddbtypes.AttributeValueMemberM{Value: map[string]ddbtypes.AttributeValue{"z": N("26"), "a": &ddbtypes.AttributeValueMemberM{Value: map[string]ddbtypes.AttributeValue{"deep": &ddbtypes.AttributeValueMemberNULL{Value: true}}}}},
		"empty": S(""),
	}
	if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(table), Key: itemKey("a", 1),
		UpdateExpression:          aws.String("SET str = :s REMOVE bin"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":s": S("changed")},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: itemKey("a", 1)}); err != nil {
		t.Fatal(err)
	}

	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	col := newCollector(ackNow)
	s, _ := newSource(t, Config{Table: table}, db, d.StreamsClient(), store)
	r := start(t, s, col.emit)
	col.waitFor(t, 3, 30*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	ev := col.snapshot()
	if len(ev) != 3 {
		t.Fatalf("%d events, want 3", len(ev))
	}
	full := `{"pk":"a","sk":1,"str":"héllo \"world\"\n","big":123456789012345678901234567890.12345678,
		"neg":-0.000000000000000000000000000000000001,"huge":` + hugePlain + `,
		"bin":"AAEC/w==","yes":true,"nil":null,"ss":["a","b"],"ns":[1.5,2],"bs":["AQ==","Ag=="],
		"list":[1,"x",[false]],"map":{"a":{"deep":null},"z":26},"empty":""}`
	updated := strings.Replace(strings.Replace(full, `"héllo \"world\"\n"`, `"changed"`, 1), `"bin":"AAEC/w==",`, "", 1)
	for i, want := range []struct {
		op            cdc.Op
		before, after string
	}{
		{cdc.OpInsert, "", full},
		{cdc.OpUpdate, full, updated},
		{cdc.OpDelete, updated, ""},
	} {
		e := ev[i]
		if e.Op != want.op {
			t.Errorf("event %d: op %v, want %v", i, e.Op, want.op)
		}
		for _, img := range []struct {
			name string
			want string
			got  []byte
		}{{"before", want.before, e.Before}, {"after", want.after, e.After}} {
			if img.want == "" {
				if img.got != nil {
					t.Errorf("event %d: %s %s, want null", i, img.name, img.got)
				}
				continue
			}
			jsonEqual(t, fmt.Sprintf("event %d %s", i, img.name), normalizeSets(t, img.want), []byte(normalizeSets(t, string(img.got))))
		}
		jsonEqual(t, "key", `{"pk":"a","sk":1}`, e.Key)
		if e.PartitionKey != table+`:["a",1]` {
			t.Errorf("partition key %q", e.PartitionKey)
		}
		if e.Source != "/cdcbridge/dynamodb/"+s.info.region+"/"+table || e.Subject != table {
			t.Errorf("source %q subject %q", e.Source, e.Subject)
		}
		if len(e.Sequence) != 40 || strings.TrimLeft(e.Sequence, "0") != strings.TrimLeft(e.Info.SequenceNumber, "0") {
			t.Errorf("sequence %q, sequence number %q", e.Sequence, e.Info.SequenceNumber)
		}
		if e.ID == "" || e.Time.IsZero() || e.Info.ShardID == "" || e.Info.Table != table || e.Info.ViewType != "NEW_AND_OLD_IMAGES" || e.Info.TTL {
			t.Errorf("event %d: %+v", i, e)
		}
		if i > 0 && e.Sequence <= ev[i-1].Sequence {
			t.Errorf("sequence %s not after %s", e.Sequence, ev[i-1].Sequence)
		}
		// Exact digits, not float64's.
		if e.After != nil && !bytes.Contains(e.After, []byte("123456789012345678901234567890.12345678")) {
			t.Errorf("event %d: big number lost digits: %s", i, e.After)
		}
		b, err := cdc.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cdc.Decode(b); err != nil {
			t.Errorf("envelope does not decode: %v\n%s", err, b)
		}
	}
	for i, name := range []string{"INSERT", "MODIFY", "REMOVE"} {
		if ev[i].Info.EventName != name {
			t.Errorf("event %d: event name %q, want %s", i, ev[i].Info.EventName, name)
		}
	}
}

// normalizeSets sorts the ss, ns and bs arrays: DynamoDB does not keep a
// set's order.
func normalizeSets(t testing.TB, doc string) string {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(doc))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("%s: %v", doc, err)
	}
	for _, k := range []string{"ss", "ns", "bs"} {
		if a, ok := m[k].([]any); ok {
			slices.SortFunc(a, func(x, y any) int { return strings.Compare(fmt.Sprint(x), fmt.Sprint(y)) })
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// TestLocalViewTypes: every stream view type works; images the stream does
// not carry are null.
func TestLocalViewTypes(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	for _, tt := range []struct {
		view ddbtypes.StreamViewType
		// before and after present, for insert, update, delete
		before, after [3]bool
	}{
		{ddbtypes.StreamViewTypeKeysOnly, [3]bool{}, [3]bool{}},
		{ddbtypes.StreamViewTypeNewImage, [3]bool{}, [3]bool{true, true, false}},
		{ddbtypes.StreamViewTypeOldImage, [3]bool{false, true, true}, [3]bool{}},
		{ddbtypes.StreamViewTypeNewAndOldImages, [3]bool{false, true, true}, [3]bool{true, true, false}},
	} {
		t.Run(string(tt.view), func(t *testing.T) {
			t.Parallel()
			db := d.Client()
			ctx := context.Background()
			table := createTable(t, db, "view", tt.view)
			put := func(v string) {
				item := itemKey("k", 7)
				item["v"] = S(v)
				if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
					t.Fatal(err)
				}
			}
			put("one")
			put("two")
			if _, err := db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: itemKey("k", 7)}); err != nil {
				t.Fatal(err)
			}
			col := newCollector(ackNow)
			s, _ := newSource(t, Config{Table: table}, db, d.StreamsClient(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
			r := start(t, s, col.emit)
			col.waitFor(t, 3, 30*time.Second, r)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			ev := col.snapshot()
			for i, op := range []cdc.Op{cdc.OpInsert, cdc.OpUpdate, cdc.OpDelete} {
				e := ev[i]
				if e.Op != op || (e.Before != nil) != tt.before[i] || (e.After != nil) != tt.after[i] || e.Info.ViewType != string(tt.view) {
					t.Errorf("event %d: op %v before %s after %s view %s", i, e.Op, e.Before, e.After, e.Info.ViewType)
				}
				jsonEqual(t, "key", `{"pk":"k","sk":7}`, e.Key)
			}
			if st := s.Status().(Status); st.ViewType != string(tt.view) {
				t.Errorf("status view type %q", st.ViewType)
			}
		})
	}
}

// TestLocalRestart stops a source while the sink holds unacknowledged
// events (they are lost with it, like a crash), then starts a new Source
// on the same store while writes go on: every change arrives, in order per
// item, with each store.
func TestLocalRestart(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	for _, kind := range []string{"file", "dynamodb"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			db := d.Client()
			ctx := context.Background()
			table := createTable(t, db, "restart", ddbtypes.StreamViewTypeNewAndOldImages)
			var store checkpoint.Store
			if kind == "file" {
				store = openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
			} else {
				st, err := ddbstore.Open(ctx, db, testenv.UniqueName("ckpt"))
				if err != nil {
					t.Fatal(err)
				}
				store = st
			}
			const items, versions = 20, 15
			want := map[itemVersion]bool{}
			var written atomic.Int64
			write := func(from, to int) {
				var wg sync.WaitGroup
				for it := range items {
					wg.Go(func() {
						for v := from; v <= to; v++ {
							item := itemKey(fmt.Sprintf("item-%d", it), 1)
							item["v"] = N(fmt.Sprint(v))
							if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
								t.Error(err)
								return
							}
							written.Add(1)
						}
					})
				}
				wg.Wait()
				for it := range items {
					for v := from; v <= to; v++ {
						want[itemVersion{it, v}] = true
					}
				}
			}
			done := make(chan struct{})
			go func() { defer close(done); write(1, 5) }()

			// First run: acks arrive late and out of order; after 60
			// events the sink stops acknowledging (a crash takes them).
			col1 := newCollector(ackNever)
			var n atomic.Int64
			col1.before = func(e *cdc.Event) error {
				if n.Add(1) <= 60 {
					go func() { time.Sleep(time.Millisecond); e.Ack() }()
				}
				return nil
			}
			s1, _ := newSource(t, Config{Table: table}, db, d.StreamsClient(), store)
			r := start(t, s1, col1.emit)
			col1.waitFor(t, 80, 30*time.Second, r)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			<-done
			go func() { write(6, versions) }()

			col2 := newCollector(ackAsync)
			s2, _ := newSource(t, Config{Table: table}, db, d.StreamsClient(), store)
			r = start(t, s2, col2.emit)
			waitUntil(t, 60*time.Second, "every change", func() bool {
				seen := map[string]bool{}
				for _, e := range append(col1.snapshot(), col2.snapshot()...) {
					seen[e.ID] = true
				}
				return written.Load() == items*versions && len(seen) == items*versions
			})
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			all := append(col1.snapshot(), col2.snapshot()...)
			checkDelivery(t, all, want)
			// The second run starts no later than the first event the first
			// run never had acknowledged.
			first2 := col2.snapshot()[0].Sequence
			if unacked := col1.snapshot()[60].Sequence; first2 > unacked {
				t.Errorf("second run started at %s, after %s which was never acknowledged", first2, unacked)
			}
			t.Logf("%d events for %d changes (%d repeated after the restart)", len(all), items*versions, len(all)-items*versions)
		})
	}
}

// TestLocalTableWithoutStream explains how to enable one.
func TestLocalTableWithoutStream(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	db := d.Client()
	table := createTable(t, db, "nostream", "")
	s, _ := newSource(t, Config{Table: table}, db, d.StreamsClient(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	err := s.Run(context.Background(), newCollector(ackNow).emit)
	if err == nil || !strings.Contains(err.Error(), "no stream enabled") || !strings.Contains(err.Error(), "--stream-specification StreamEnabled=true") {
		t.Fatalf("Run: %v, want an error with the fix", err)
	}
	s, _ = newSource(t, Config{Table: "no_such_table"}, db, d.StreamsClient(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	if err := s.Run(context.Background(), newCollector(ackNow).emit); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Run on a missing table: %v", err)
	}
}

// TestLocalTableDeleted: deleting the table ends the source with a clear
// error.
func TestLocalTableDeleted(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	db := d.Client()
	ctx := context.Background()
	table := createTable(t, db, "deleted", ddbtypes.StreamViewTypeNewImage)
	if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: itemKey("x", 1)}); err != nil {
		t.Fatal(err)
	}
	col := newCollector(ackNow)
	s, _ := newSource(t, Config{Table: table}, db, d.StreamsClient(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, col.emit)
	col.waitFor(t, 1, 30*time.Second, r)
	if _, err := db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(table)}); err != nil {
		t.Fatal(err)
	}
	err := r.wait(t, 30*time.Second)
	if !errors.Is(err, ErrStreamGone) {
		t.Fatalf("Run: %v, want ErrStreamGone", err)
	}
}

// TestLocalBehindFaultyProxy reads DynamoDB Local through a server that
// throttles, expires iterators and serves empty pages: nothing is lost,
// repeated or reordered.
func TestLocalBehindFaultyProxy(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	db := d.Client()
	ctx := context.Background()
	table := createTable(t, db, "proxy", ddbtypes.StreamViewTypeNewAndOldImages)
	f := newFakeStreams(t)
	f.proxyTo(d)
	f.faultEvery["GetRecords"] = fakeFault{code: "LimitExceededException", status: 400, n: 3}
	f.faultEvery["GetShardIterator"] = fakeFault{code: "InternalServerError", status: 500, n: 2}
	f.faultEvery["DescribeStream"] = fakeFault{code: "LimitExceededException", status: 400, n: 2}
	f.emptyEvery = 4
	f.proxyLimit = 7 // many pages
	want := map[itemVersion]bool{}
	for v := 1; v <= 10; v++ {
		for it := range 10 {
			item := itemKey(fmt.Sprintf("item-%d", it), 1)
			item["v"] = N(fmt.Sprint(v))
			if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
				t.Fatal(err)
			}
			want[itemVersion{it, v}] = true
		}
	}
	col := newCollector(ackNow)
	n := 0
	col.before = func(e *cdc.Event) error {
		if n++; n%25 == 0 {
			f.fail("GetRecords", "ExpiredIteratorException", 400, 1)
		}
		return nil
	}
	s, reg := newSource(t, Config{Table: table}, db, f.client(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, col.emit)
	col.waitFor(t, len(want), 30*time.Second, r)
	time.Sleep(100 * time.Millisecond)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	ev := col.snapshot()
	if len(ev) != len(want) {
		t.Errorf("%d events, want %d", len(ev), len(want))
	}
	checkDelivery(t, ev, want)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "cdcbridge_dynamodb_api_errors_total" {
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, p := range m.GetLabel() {
					l[p.GetName()] = p.GetValue()
				}
				codes[l["operation"]+"/"+l["code"]] += m.GetCounter().GetValue()
			}
		}
	}
	for _, k := range []string{"GetRecords/LimitExceededException", "GetRecords/ExpiredIteratorException", "GetShardIterator/InternalServerError"} {
		if codes[k] == 0 {
			t.Errorf("no %s counted; errors: %v", k, codes)
		}
	}
}

// TestLocalStartLatest: a first start at latest on DynamoDB Local, with
// the DynamoDB checkpoint store: only later changes arrive, before and
// after a restart.
func TestLocalStartLatest(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	db := d.Client()
	ctx := context.Background()
	table := createTable(t, db, "latest", ddbtypes.StreamViewTypeNewAndOldImages)
	put := func(pk string) {
		t.Helper()
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: itemKey(pk, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	put("before-1")
	put("before-2")
	store, err := ddbstore.Open(ctx, db, testenv.UniqueName("ckpt"))
	if err != nil {
		t.Fatal(err)
	}
	col := newCollector(ackNow)
	s, _ := newSource(t, Config{Table: table, Start: StartLatest}, db, d.StreamsClient(), store)
	r := start(t, s, col.emit)
	waitUntil(t, 30*time.Second, "ready", s.Ready)
	time.Sleep(200 * time.Millisecond)
	put("after-1")
	col.waitFor(t, 1, 30*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	put("after-2")
	s2, _ := newSource(t, Config{Table: table, Start: StartLatest}, db, d.StreamsClient(), store)
	r = start(t, s2, col.emit)
	col.waitFor(t, 2, 30*time.Second, r)
	time.Sleep(200 * time.Millisecond)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range col.snapshot() {
		got = append(got, string(e.Key))
	}
	if diff := cmp.Diff([]string{`{"pk":"after-1","sk":1}`, `{"pk":"after-2","sk":1}`}, got); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
}
