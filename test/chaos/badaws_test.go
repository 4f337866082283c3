package chaos

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

// TestBadKinesis: a stream that does not exist, credentials refused at
// start and in the middle of a run, and the stream deleted in the middle
// of a run. Each stops the bridge with a message that names the cause;
// after the cause is removed, a restart delivers what was not delivered.
func TestBadKinesis(t *testing.T) {
	t.Parallel()
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)

	t.Run("missing stream", func(t *testing.T) {
		t.Parallel()
		r := newPGRig(t, "missing stream", pg, kin)
		expectStartFails(t, append(r.env(pg.URL(r.DB), r.Kinesis), "CDCBRIDGE_KINESIS_STREAM=nosuchstream"), "nosuchstream", "not")
	})

	t.Run("credentials refused at start", func(t *testing.T) {
		t.Parallel()
		r := newPGRig(t, "credentials refused", pg, kin)
		fake := kinesisfake.New(kinesisfake.Options{Upstream: kin.Endpoint})
		t.Cleanup(fake.Close)
		fake.SetFaults(kinesisfake.Faults{Errors: map[string]string{"DescribeStreamSummary": "UnrecognizedClientException", "ListShards": "UnrecognizedClientException"}})
		expectStartFails(t, r.env(pg.URL(r.DB), fake.URL), "UnrecognizedClient")
	})

	t.Run("credentials refused mid-run", func(t *testing.T) {
		t.Parallel()
		const name = "bad input: credentials refused mid-run"
		r := newPGRig(t, name, pg, kin)
		r.Work.Changes, r.Work.TxPerSecond = Pick(params, 1500, 5000), 30
		fake := kinesisfake.New(kinesisfake.Options{Upstream: kin.Endpoint})
		t.Cleanup(fake.Close)
		b := NewBridge(t, r.env(pg.URL(r.DB), fake.URL)...)
		b.Start()
		waitStreaming(t, b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
		sleep(ctx, 3*time.Second)
		fake.SetFaults(kinesisfake.Faults{Errors: map[string]string{"PutRecords": "UnrecognizedClientException"}})
		expectFailure(t, b, time.Minute, "unrecognizedclient")
		fake.SetFaults(kinesisfake.Faults{})
		b.Start()
		waitStreaming(t, b)
		wait()
		r.finish(b, 2*time.Minute)
	})

	t.Run("stream deleted mid-run", func(t *testing.T) {
		t.Parallel()
		r := newPGRig(t, "stream deleted", pg, kin)
		r.Work.Changes, r.Work.TxPerSecond = Pick(params, 1500, 5000), 30
		b := NewBridge(t, r.env(pg.URL(r.DB), r.Kinesis)...)
		b.Start()
		waitStreaming(t, b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
		sleep(ctx, 3*time.Second)
		kc := kin.Client()
		if _, err := kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(r.Stream)}); err != nil {
			t.Fatal(err)
		}
		deletedAt := r.Log.Len()
		expectFailure(t, b, 2*time.Minute, "not found", r.Stream)
		// The stream comes back (empty); what the old one held is gone
		// with it, but nothing committed after the deletion may be lost.
		for {
			_, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(r.Stream)})
			var nf *types.ResourceNotFoundException
			if errors.As(err, &nf) {
				break
			}
			sleep(ctx, 100*time.Millisecond)
		}
		if err := kin.CreateStream(ctx, r.Stream, 4); err != nil {
			t.Fatal(err)
		}
		b.Start()
		waitStreaming(t, b)
		wait()
		after := &verify.Log{}
		after.Add(r.Log.Changes()[deletedAt:]...)
		var res verify.Result
		for deadline := time.Now().Add(2 * time.Minute); ; sleep(ctx, 2*time.Second) {
			recs, err := verify.ReadAll(ctx, kc, r.Stream)
			if err != nil {
				t.Fatal(err)
			}
			res = verify.Compare(recs, after, nil)
			if res.Missing == 0 || time.Now().After(deadline) {
				break
			}
		}
		if res.Missing > 0 || res.OrderViolations > 0 || res.Invalid > 0 || res.DuplicatesDiffer > 0 {
			t.Errorf("after the stream came back: %v", res.Err())
		}
		logf(t, "after the stream came back: %d of the %d changes committed after the deletion delivered, %d earlier ones sent again",
			res.Delivered, res.Written, res.Unexpected)
	})
}

// expectStartFails runs the bridge once with settings and wants it to stop
// at once with a non-zero status and output that names words.
func expectStartFails(t *testing.T, settings []string, words ...string) {
	t.Helper()
	env := append(append(BaseEnv(), "CDCBRIDGE_HTTP_ADDR=127.0.0.1:0"), settings...)
	code, out := runOnce(t, 90*time.Second, env)
	if code <= 0 || !contains(out, words...) {
		t.Errorf("exit %d; want an error naming %q:\n%s", code, words, tail(out, 10))
	}
	t.Logf("exit %d: %s", code, lastLine(out))
}

// TestBadDynamoDBTable: a table that does not exist stops the bridge with
// a message naming it.
func TestBadDynamoDBTable(t *testing.T) {
	t.Parallel()
	ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
	r := newDDBRig(t, "missing table", ddb, kin)
	expectStartFails(t, append(r.env(ddb.Endpoint, r.Kinesis), "CDCBRIDGE_DYNAMODB_TABLE=nosuchtable"), "nosuchtable")
}

// TestDynamoDBCredentialsRefused refuses the DynamoDB bridge's Streams
// calls as AWS refuses credentials it does not accept: at start, and in
// the middle of a run. Either stops the bridge with a message naming the
// refusal; once the credentials are accepted again, a restart delivers
// everything.
func TestDynamoDBCredentialsRefused(t *testing.T) {
	t.Parallel()
	ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)

	t.Run("at start", func(t *testing.T) {
		t.Parallel()
		r := newDDBRig(t, "dynamodb credentials refused", ddb, kin)
		proxy := NewStreamsProxy(ddb.Endpoint, params.Rand("dynamodb credentials refused"))
		t.Cleanup(proxy.Close)
		proxy.SetRefused(true)
		expectStartFails(t, r.env(proxy.URL, r.Kinesis), "UnrecognizedClient")
	})

	t.Run("mid-run", func(t *testing.T) {
		t.Parallel()
		const name = "bad input: DynamoDB credentials refused mid-run"
		r := newDDBRig(t, name, ddb, kin)
		r.Work.Changes, r.Work.TxPerSecond = Pick(params, 600, 2000), 20
		proxy := NewStreamsProxy(ddb.Endpoint, params.Rand(name))
		t.Cleanup(proxy.Close)
		b := NewBridge(t, r.env(proxy.URL, r.Kinesis)...)
		b.Start()
		b.WaitReady(90 * time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
		sleep(ctx, 3*time.Second)
		proxy.SetRefused(true)
		expectFailure(t, b, time.Minute, "unrecognizedclient")
		proxy.SetRefused(false)
		b.Start()
		b.WaitReady(90 * time.Second)
		wait()
		r.finish(b, 2*time.Minute)
	})
}

// TestMalformedResponses puts the bridge behind endpoints whose answers
// are sometimes cut short, HTML pages (200 and 502) or of the wrong
// content type: Kinesis for the Postgres bridge, DynamoDB Streams for the
// DynamoDB bridge. Nothing may be lost or reordered.
func TestMalformedResponses(t *testing.T) {
	t.Parallel()
	t.Run("kinesis", func(t *testing.T) {
		t.Parallel()
		const name = "bad input: malformed Kinesis answers"
		pg, kin := testenv.PG(t), testenv.Kinesalite(t)
		r := newPGRig(t, name, pg, kin)
		r.Work.Changes, r.Work.TxPerSecond = Pick(params, 2000, 10000), 30
		m := NewMangler(kin.Endpoint, params.Rand(name), 0.05, "PutRecords", "DescribeStreamSummary", "ListShards")
		t.Cleanup(m.Close)
		b := NewBridge(t, r.env(pg.URL(r.DB), m.URL)...)
		b.Start()
		waitStreaming(t, b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := r.Work.Run(ctx); err != nil {
			t.Fatal(err)
		}
		m.SetRate(0)
		logf(t, "%d answers spoiled", m.Spoiled.Load())
		r.finish(b, 2*time.Minute)
		if m.Spoiled.Load() == 0 {
			t.Error("no answer was spoiled")
		}
	})
	t.Run("dynamodb streams", func(t *testing.T) {
		t.Parallel()
		const name = "bad input: malformed DynamoDB Streams answers"
		ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
		r := newDDBRig(t, name, ddb, kin)
		r.Work.Changes, r.Work.TxPerSecond = Pick(params, 600, 2000), 20
		m := NewMangler(ddb.Endpoint, params.Rand(name), 0.05, "GetRecords", "GetShardIterator", "DescribeStream")
		t.Cleanup(m.Close)
		b := NewBridge(t, r.env(m.URL, r.Kinesis)...)
		b.Start()
		b.WaitReady(90 * time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := r.Work.Run(ctx); err != nil {
			t.Fatal(err)
		}
		logf(t, "%d answers spoiled", m.Spoiled.Load())
		r.finish(b, 2*time.Minute)
		if m.Spoiled.Load() == 0 {
			t.Error("no answer was spoiled")
		}
	})
}
