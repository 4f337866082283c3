package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/dedupe"
	"github.com/cdcbridge/cdcbridge/kpl"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func event(row, version int) *cdc.Event {
	lsn := fmt.Sprintf("%016X:%08d", 0x1000000+version*100+row, 1)
	return &cdc.Event{
		ID: lsn, Sequence: lsn, Source: "/cdcbridge/postgres/7301234567890123456/app/cdcbridge",
		Subject: "public.items", Time: time.Unix(1_800_000_000, 0).UTC(), Op: cdc.OpUpdate,
		PartitionKey: fmt.Sprintf("public.items:[%d]", row),
		Key:          json.RawMessage(fmt.Sprintf(`{"id":%d}`, row)),
		After:        json.RawMessage(fmt.Sprintf(`{"id":%d,"v":%d}`, row, version)),
		Info:         cdc.SourceInfo{CommitLSN: "0/1", Ordinal: 1, Schema: "public", Table: "items"},
	}
}

// TestConsumer: two instances of the consumer read the same stream, which
// holds every change once or twice, some in KPL aggregates (some of them
// gzipped); applying fails
// once for some changes. Each change is applied exactly once, and each
// row's changes in order.
func TestConsumer(t *testing.T) {
	kin, ddb := testenv.Kinesalite(t), testenv.DynamoDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream := testenv.UniqueName("consumer")
	if err := kin.CreateStream(ctx, stream, 2); err != nil {
		t.Fatal(err)
	}
	kc := kin.Client()
	put := func(pk string, data []byte) {
		t.Helper()
		if _, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream),
			Records: []types.PutRecordsRequestEntry{{PartitionKey: aws.String(pk), Data: data}}}); err != nil {
			t.Fatal(err)
		}
	}
	const rows, versions = 8, 12
	for v := 1; v <= versions; v += 2 {
		for r := range rows {
			a, b := event(r, v), event(r, v+1)
			da, _ := cdc.Encode(a)
			db, _ := cdc.Encode(b)
			switch r % 4 {
			case 0, 3: // two changes in one aggregate, gzipped for r = 3
				var agg kpl.Aggregator
				agg.Add(a.PartitionKey, da)
				agg.Add(b.PartitionKey, db)
				blob := agg.Bytes(nil)
				if r%4 == 3 {
					var z kpl.Compressor
					blob = z.Append(nil, blob)
				}
				put(a.PartitionKey, blob)
			case 1: // each change sent twice, as after a bridge restart
				put(a.PartitionKey, da)
				put(a.PartitionKey, da)
				put(b.PartitionKey, db)
				put(b.PartitionKey, db)
			default:
				put(a.PartitionKey, da)
				put(b.PartitionKey, db)
			}
		}
	}

	table := testenv.UniqueName("consumer_dedupe")
	var mu sync.Mutex
	applied := map[string]int{}
	order := map[string][]int{}
	failedOnce := map[string]bool{}
	apply := func(_ context.Context, e *cdc.Event) error {
		var img struct{ ID, V int }
		if err := json.Unmarshal(e.After, &img); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if img.V%5 == 0 && !failedOnce[e.ID] {
			failedOnce[e.ID] = true
			return fmt.Errorf("row %d: a downstream error", img.ID)
		}
		applied[e.ID]++
		order[e.PartitionKey] = append(order[e.PartitionKey], img.V)
		return nil
	}
	var wg sync.WaitGroup
	for i := range 2 {
		store, err := dedupe.NewStore(dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(ddb.Endpoint) }),
			dedupe.StoreConfig{Table: table, Monotonic: true, Owner: fmt.Sprintf("consumer-%d", i), ClaimTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.EnsureTable(ctx); err != nil {
			t.Fatal(err)
		}
		c := &Consumer{Store: store, Apply: apply, Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))}
		wg.Go(func() {
			if err := poll(ctx, kc, stream, c.Handle, true); err != nil {
				t.Errorf("consumer %d: %v", i, err)
			}
		})
	}
	wg.Wait()

	if len(applied) != rows*versions {
		t.Errorf("%d changes applied, want %d", len(applied), rows*versions)
	}
	for id, n := range applied {
		if n != 1 {
			t.Errorf("change %s applied %d times", id, n)
		}
	}
	for pk, vs := range order {
		for i := 1; i < len(vs); i++ {
			if vs[i] <= vs[i-1] {
				t.Errorf("row %s: versions applied in the order %v", pk, vs)
				break
			}
		}
	}
	if len(failedOnce) == 0 {
		t.Error("no change failed: the retry path went untested")
	}
}
