package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

// TestDaemonDynamoDBToKinesis runs the binary on a DynamoDB Local stream:
// every change arrives, in order per item, across a kill -9 and restart.
func TestDaemonDynamoDBToKinesis(t *testing.T) {
	ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	table, stream := testenv.UniqueName("e2e"), testenv.UniqueName("e2eddb")
	if err := kin.CreateStream(ctx, stream, 2); err != nil {
		t.Fatal(err)
	}
	db := ddb.Client()
	if _, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: types.ScalarAttributeTypeN},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange},
		},
		BillingMode:         types.BillingModePayPerRequest,
		StreamSpecification: &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	}); err != nil {
		t.Fatal(err)
	}
	put := func(item, v int) {
		t.Helper()
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]types.AttributeValue{
			"pk": &types.AttributeValueMemberS{Value: fmt.Sprintf("item-%d", item)},
			"sk": &types.AttributeValueMemberN{Value: "1"},
			"v":  &types.AttributeValueMemberN{Value: strconv.Itoa(v)},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	// kinesalite exits when a request is cut off mid-body, as a killed
	// bridge leaves it: the bridge reaches it through a forwarding proxy.
	shield := kinesisfake.New(kinesisfake.Options{Upstream: kin.Endpoint})
	defer shield.Close()
	work := t.TempDir()
	env := []string{
		"CDCBRIDGE_SOURCE=dynamodb", "CDCBRIDGE_DYNAMODB_TABLE=" + table, "CDCBRIDGE_KINESIS_STREAM=" + stream,
		"CDCBRIDGE_CHECKPOINT_STORE=file://" + filepath.Join(work, "cp.json"), "CDCBRIDGE_DLQ_DIR=" + filepath.Join(work, "dlq"),
		"CDCBRIDGE_DYNAMODB_IDLE_POLL=100ms", "CDCBRIDGE_KINESIS_AGGREGATE=true", "CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip",
		"AWS_ENDPOINT_URL_KINESIS=" + shield.URL, "AWS_ENDPOINT_URL_DYNAMODB=" + ddb.Endpoint, "AWS_ENDPOINT_URL_DYNAMODB_STREAMS=" + ddb.Endpoint,
	}
	const items, rounds = 20, 6
	for i := range items {
		put(i, 0)
	}
	b := startBridge(t, env)
	b.waitReady(60 * time.Second)
	for r := 1; r <= rounds; r++ {
		for i := range items {
			put(i, r)
		}
		if r == rounds/2 { // kill -9 mid-stream; the restart resumes from the checkpoint
			b.waitMetric("cdcbridge_events_delivered_total", float64(items*2), 60*time.Second)
			_ = b.cmd.Process.Signal(syscall.SIGKILL)
			<-b.exited
			b = startBridge(t, env)
			b.waitReady(60 * time.Second)
		}
	}
	want := items * (rounds + 1)
	recs := waitForRecords(t, ctx, kin, stream, want, b)
	if err, took := b.stop(20 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v after %s\n%s", err, took, b.log())
	}
	rep, first := verify.Check(recs)
	if rep.Invalid > 0 || len(rep.OrderViolations) > 0 || len(rep.DuplicateDiffer) > 0 || len(first) != want {
		t.Fatalf("stream check: %d distinct events, want %d; %+v\n%s", len(first), want, rep, b.log())
	}
	checkTail(t, env, first)
	aggregated := 0
	for _, r := range recs {
		if r.Aggregated {
			aggregated++
		}
		if r.Aggregated != r.Compressed {
			t.Fatalf("record %s/%s: aggregated %v, compressed %v; want every record in a gzipped aggregate", r.ShardID, r.Sequence, r.Aggregated, r.Compressed)
		}
	}
	if aggregated == 0 {
		t.Errorf("no KPL aggregate on the stream with CDCBRIDGE_KINESIS_AGGREGATE=true")
	}

	// Per item, the first occurrences carry v = 0, 1, ..., rounds in order.
	next := map[string]int{}
	for _, r := range recs {
		e := r.Event
		if e == nil || !strings.HasPrefix(e.Subject, table) {
			t.Fatalf("unexpected record %s", r.Data)
		}
		if _, isFirst := first[e.Source+" "+e.ID]; !isFirst || first[e.Source+" "+e.ID] != e {
			continue
		}
		want := fmt.Sprintf(`"v":%d`, next[e.PartitionKey])
		if !strings.Contains(string(e.After), want) {
			t.Fatalf("item %s: event %s has after %s, want %s", e.PartitionKey, e.ID, e.After, want)
		}
		next[e.PartitionKey]++
	}
	if len(next) != items {
		t.Fatalf("%d items seen, want %d", len(next), items)
	}
}
