package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestHotKey: one row takes half of the changes, CDCBRIDGE_KINESIS_AGGREGATE
// =hot (gzipped, and not), and Kinesis throttles 30% of entries, fails
// others, and loses or fails whole requests: the hot row's runs go out as
// aggregates, and the stream holds every change with each row's first
// occurrences in commit order.
func TestHotKey(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testHotKey(t, false) })
	t.Run("gzip", func(t *testing.T) { testHotKey(t, true) })
}

func testHotKey(t *testing.T, gzip bool) {
	name := "hot key (AGGREGATE=hot) under Kinesis faults"
	env := []string{"CDCBRIDGE_KINESIS_AGGREGATE=hot"}
	if gzip {
		name = "hot key (AGGREGATE=hot, AGGREGATE_COMPRESSION=gzip) under Kinesis faults"
		env = append(env, "CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip")
	}
	t.Parallel()
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	rng := params.Rand(name + "/faults")
	r.Work.Changes = Pick(params, 3000, 40000)
	r.Work.Workers = 1 // one worker owns the one hot row
	r.Work.HotRows = 1
	r.Work.HotShare = 0.5
	r.Work.TxPerSecond = Pick(params, 100.0, 100.0)
	r.Work.BigTxProb = 0

	fake := kinesisfake.New(kinesisfake.Options{Upstream: kin.Endpoint, Seed: rng.Uint64()})
	t.Cleanup(fake.Close)
	const requestTimeout = 5 * time.Second
	b := NewBridge(t, append(append(r.env(pg.URL(r.DB), fake.URL), env...),
		"CDCBRIDGE_KINESIS_REQUEST_TIMEOUT="+requestTimeout.String())...)
	b.Start()
	waitStreaming(t, b)
	fake.SetFaults(kinesisfake.Faults{
		ThrottleEntries: 0.30,
		FailEntries:     0.05,
		FailRequests:    0.05,
		LoseResponses:   0.05,
		LoseMode:        kinesisfake.Reset,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runAsync(t, "workload", func() error { return r.Work.Run(ctx) })()
	c := fake.Counts()
	fake.SetFaults(kinesisfake.Faults{})
	logf(t, "workload done: %d changes; fake: %d put requests, %d failed entries, %d failed requests, %d lost answers, %d aggregates accepted",
		r.Work.Committed(), c.PutRequests, c.FailedEntries, c.FailedRequests, c.LostResponses, c.Aggregates)
	if c.FailedEntries == 0 {
		t.Errorf("no entry failed: %+v", c)
	}
	r.finish(b, Pick(params, 3*time.Minute, 6*time.Minute))
	_, recs, err := r.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Cold rows may be aggregated too, when two of their changes were
	// queued at once (behind a throttled entry): count the hot row's.
	const hotPK = "public.items:[1]"
	aggregated, hotAggregated, plain := 0, 0, 0
	for _, rec := range recs {
		if gzip && rec.Aggregated && !rec.Compressed || !gzip && rec.Compressed {
			t.Fatalf("record %s/%s: aggregated %v, compressed %v; with gzip every aggregate is compressed, without none",
				rec.ShardID, rec.Sequence, rec.Aggregated, rec.Compressed)
		}
		switch {
		case !rec.Aggregated:
			plain++
		case rec.PartitionKey == hotPK:
			hotAggregated++
			aggregated++
		default:
			aggregated++
		}
	}
	logf(t, "stream: %d user records in aggregates, %d of them the hot row's; %d plain", aggregated, hotAggregated, plain)
	if hotAggregated == 0 || plain == 0 {
		t.Errorf("want the hot row's changes in aggregates and other changes plain; got %d of the hot row's aggregated, %d plain", hotAggregated, plain)
	}
}
