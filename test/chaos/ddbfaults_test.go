package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestDynamoDBStreamsFaults runs the DynamoDB bridge through a proxy that
// expires iterators and throttles reads, splits the stream's shard in the
// middle of the run, and kills the bridge once after the split, so that it
// resumes inside the children from its checkpoints.
func TestDynamoDBStreamsFaults(t *testing.T) {
	const name = "dynamodb streams faults"
	t.Parallel()
	ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
	r := newDDBRig(t, name, ddb, kin)
	r.Work.Changes = Pick(params, 1500, 5000)
	r.Work.TxPerSecond = Pick(params, 25.0, 8.0)
	r.Work.LargeProb = 0.01
	r.Work.BigTxProb = 0.02
	proxy := NewStreamsProxy(ddb.Endpoint, params.Rand(name+"/faults"))
	t.Cleanup(proxy.Close)
	proxy.SetFaults(0.05, 0.10)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	desc, err := ddb.Client().DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(r.Table)})
	if err != nil {
		t.Fatal(err)
	}
	streamARN := aws.ToString(desc.Table.LatestStreamArn)

	b := NewBridge(t, r.env(proxy.URL, r.Kinesis)...)
	b.Start()
	b.WaitReady(90 * time.Second)
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })

	for r.Work.Committed() < int64(r.Work.Changes/3) {
		select {
		case <-b.Exited():
			t.Fatalf("cdcbridge exited (code %d)\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
	parent, end, err := proxy.Split(ctx, streamARN)
	if err != nil {
		t.Fatal(err)
	}
	logf(t, "split shard %s after sequence number %s", parent, end)
	for r.Work.Committed() < int64(r.Work.Changes*2/3) {
		select {
		case <-b.Exited():
			t.Fatalf("cdcbridge exited (code %d)\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
	b.Kill()
	logf(t, "kill -9 after the split")
	b.Start()
	b.WaitReady(90 * time.Second)
	wait()
	logf(t, "workload done: %d changes; %d iterators expired, %d calls throttled, %d reads of child shards",
		r.Work.Committed(), proxy.Expired.Load(), proxy.Throttled.Load(), proxy.ChildReads.Load())
	r.finish(b, Pick(params, 2*time.Minute, 5*time.Minute))
	if proxy.Expired.Load() == 0 || proxy.Throttled.Load() == 0 || proxy.ChildReads.Load() == 0 {
		t.Errorf("not every fault happened: %d expired, %d throttled, %d child reads",
			proxy.Expired.Load(), proxy.Throttled.Load(), proxy.ChildReads.Load())
	}
}
