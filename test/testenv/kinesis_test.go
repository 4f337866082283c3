package testenv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/google/go-cmp/cmp"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestKinesisRoundTrip writes records to each emulator and reads them back
// through the shard iterators, as a consumer would.
func TestKinesisRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		kind  string
		start func(testing.TB) *testenv.Kinesis
	}{
		{testenv.KindKinesalite, testenv.Kinesalite},
		{testenv.KindKinesisMock, testenv.KinesisMock},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			k := tc.start(t)
			if k.Kind != tc.kind {
				t.Errorf("Kind = %q, want %q", k.Kind, tc.kind)
			}
			const shards, n = 2, 20
			stream := testenv.UniqueName("roundtrip")
			if err := k.CreateStream(ctx, stream, shards); err != nil {
				t.Fatal(err)
			}
			c := k.Client()

			want := map[string][]string{} // partition key -> data in write order
			var entries []types.PutRecordsRequestEntry
			for i := range n {
				key, data := fmt.Sprintf("key-%d", i%5), fmt.Sprintf("record-%02d", i)
				want[key] = append(want[key], data)
				entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String(key), Data: []byte(data)})
			}
			out, err := c.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
			if err != nil {
				t.Fatalf("PutRecords: %v", err)
			}
			if got := aws.ToInt32(out.FailedRecordCount); got != 0 {
				t.Fatalf("FailedRecordCount = %d, want 0", got)
			}
			for i, r := range out.Records {
				if r.ShardId == nil || r.SequenceNumber == nil {
					t.Fatalf("result %d has no shard or sequence number: %+v", i, r)
				}
			}

			got := readAll(ctx, t, c, stream, n)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("records read back (-want +got):\n%s", diff)
			}
		})
	}
}

// readAll reads every shard from TRIM_HORIZON until n records arrived and
// returns their data by partition key, in shard order.
func readAll(ctx context.Context, t *testing.T, c *kinesis.Client, stream string, n int) map[string][]string {
	t.Helper()
	shards, err := c.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatalf("ListShards: %v", err)
	}
	iters := map[string]*string{}
	for _, s := range shards.Shards {
		it, err := c.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
			StreamName:        aws.String(stream),
			ShardId:           s.ShardId,
			ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
		})
		if err != nil {
			t.Fatalf("GetShardIterator %s: %v", aws.ToString(s.ShardId), err)
		}
		iters[aws.ToString(s.ShardId)] = it.ShardIterator
	}
	got := map[string][]string{}
	count := 0
	for count < n {
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records before %v", count, n, ctx.Err())
		}
		for shard, it := range iters {
			if it == nil {
				continue
			}
			out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it, StreamARN: nil})
			if err != nil {
				t.Fatalf("GetRecords %s: %v", shard, err)
			}
			for _, r := range out.Records {
				key := aws.ToString(r.PartitionKey)
				got[key] = append(got[key], string(r.Data))
				count++
			}
			iters[shard] = out.NextShardIterator
		}
	}
	return got
}
