package dynamodb

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/scanfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// scanRig is a source on a scripted stream (one idle shard) whose table is
// served by a scripted DynamoDB endpoint that reports consumed capacity
// and throttles over a limit.
func scanRig(t *testing.T, o scanfake.Options, cfg Config) (*Source, *collector, *scanfake.Server, *running) {
	t.Helper()
	o.Table = fakeTable
	srv := scanfake.New(o)
	t.Cleanup(srv.Close)
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	ddb := dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	cfg.StreamARN = f.arn
	cfg.Snapshot = SnapshotInitial
	if cfg.SnapshotMargin == 0 {
		cfg.SnapshotMargin = 100 * time.Millisecond
	}
	s, _ := newSource(t, cfg, ddb, f.client(), store)
	col := newCollector(ackNow)
	r := start(t, s, col.emit)
	return s, col, srv, r
}

func waitLoad(t *testing.T, s *Source, timeout time.Duration) SnapshotInfo {
	t.Helper()
	var st SnapshotInfo
	waitUntil(t, timeout, "the load to finish", func() bool {
		var ok bool
		st, ok = loadStatus(s)
		return ok && st.Finished != ""
	})
	if st.State != loadDone {
		t.Fatalf("load %s: %s (%s)", st.ID, st.State, st.Note)
	}
	return st
}

// checkItems: every item of the table read exactly once.
func checkItems(t *testing.T, events []*cdc.Event, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, e := range events {
		if e.Op == cdc.OpRead {
			seen[string(e.Key)]++
		}
	}
	if len(seen) != n {
		t.Errorf("%d items read, want %d", len(seen), n)
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("item %s read %d times", k, c)
		}
	}
}

// maxOverWindows is the most capacity consumed within any window of
// length w.
func maxOverWindows(served []scanfake.Served, w time.Duration) float64 {
	most := 0.0
	j, sum := 0, 0.0
	for i := range served {
		sum += served[i].Units
		for served[i].At.Sub(served[j].At) >= w {
			sum -= served[j].Units
			j++
		}
		most = max(most, sum)
	}
	return most
}

// TestSnapshotBudget: with a budget under what the table allows, the load
// uses its budget and stays within it (the bucket's depth of half a second
// is what a window may take beyond rate × length), and is never
// throttled. With a budget over what the table allows, the table's
// refusals slow it down, and it finishes with every item read once.
func TestSnapshotBudget(t *testing.T) {
	t.Parallel()
	t.Run("within", func(t *testing.T) {
		t.Parallel()
		const rate, items = 100.0, 4000 // 2 KB items: 2,000 RCU, 20 s at the budget
		s, col, srv, r := scanRig(t, scanfake.Options{Items: items, ItemBytes: 2048, ReadCapacity: 400, ThrottleRCU: 400},
			Config{SnapshotMaxRCU: rate, SnapshotSegments: 3})
		start := time.Now()
		st := waitLoad(t, s, time.Minute)
		took := time.Since(start)
		served := srv.Served()
		total := 0.0
		for _, sv := range served {
			total += sv.Units
		}
		throttled, scans := srv.Throttled()
		t.Logf("%d pages; %d scans, %.0f RCU in %v (%.1f RCU/s; budget %v), throttled %d; status says %.0f RCU", pages(st), scans, total, took.Round(time.Millisecond),
			total/took.Seconds(), rate, throttled, st.ConsumedRCU)
		if throttled != 0 {
			t.Errorf("%d scans throttled under a budget of a quarter of the table's capacity", throttled)
		}
		if avg := total / took.Seconds(); avg > rate*1.05 || avg < rate*0.7 {
			t.Errorf("%.1f RCU/s on average, want within 70%%..105%% of the budget %v", avg, rate)
		}
		// The bound of budget.go: rate × W, the bucket's half second, and
		// one page per segment (a second of budget in all) beyond it; for
		// W = 60 s that is within 105%.
		for _, w := range []time.Duration{2 * time.Second, 5 * time.Second, 10 * time.Second} {
			bound := rate*w.Seconds() + rate/2 + rate
			if got := maxOverWindows(served, w); got > bound {
				t.Errorf("%.0f RCU within %v, over the bound %.0f", got, w, bound)
			}
		}
		// A request whose answer was lost (and retried) is not counted by
		// the bridge, which never saw its cost.
		if got := testutil.ToFloat64(s.m.snapRCU); got > total || got < total*0.95 || st.ConsumedRCU != got {
			t.Errorf("consumed: metric %v, status %v; the endpoint reported %v", got, st.ConsumedRCU, total)
		}
		_ = r.stop(t)
		checkItems(t, col.snapshot(), items)
	})
	t.Run("throttled", func(t *testing.T) {
		t.Parallel()
		const items = 4000 // 2,000 RCU, the table allows 200/s
		s, col, srv, r := scanRig(t, scanfake.Options{Items: items, ItemBytes: 2048, ReadCapacity: 200, ThrottleRCU: 200},
			Config{SnapshotMaxRCU: 800, SnapshotSegments: 4})
		waitLoad(t, s, time.Minute)
		throttled, scans := srv.Throttled()
		t.Logf("%d scans, %d throttled", scans, throttled)
		if throttled == 0 {
			t.Errorf("no scan throttled with a budget of four times the table's capacity")
		}
		if got := testutil.ToFloat64(s.m.snapThrottled); int(got) != throttled {
			t.Errorf("cdcbridge_dynamodb_snapshot_throttled_total = %v, the endpoint refused %d", got, throttled)
		}
		if throttled*2 > scans {
			t.Errorf("%d of %d scans throttled: the load did not back off", throttled, scans)
		}
		_ = r.stop(t)
		checkItems(t, col.snapshot(), items)
	})
}

func TestBudgetBucket(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBudget(100)
	b.now = func() time.Time { return now }
	b.last = now
	ctx := t.Context()
	// An idle bucket holds half a second.
	now = now.Add(10 * time.Second)
	if err := b.take(ctx, 50); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	left := b.tokens
	b.mu.Unlock()
	if left != 0 {
		t.Errorf("after taking 50 of a full bucket: %v left, want 0", left)
	}
	// A page that cost more than its estimate leaves a debt.
	b.settle(50, 150)
	b.mu.Lock()
	debt := b.tokens
	b.mu.Unlock()
	if debt != -100 {
		t.Errorf("tokens %v after a page of 150 estimated at 50, want -100", debt)
	}
	b.throttled()
	if b.rate != 50 {
		t.Errorf("rate %v after a throttle, want 50", b.rate)
	}
	for range 30 {
		b.settle(0, 0)
	}
	if b.rate != 100 {
		t.Errorf("rate %v after pages without throttling, want back to 100", b.rate)
	}
}

// TestSnapshotHeldUntilStreamPassed: while the stream's reader gets no
// answer, the pages a load read are held, however long; once it is
// answered again, they go out.
func TestSnapshotHeldUntilStreamPassed(t *testing.T) {
	t.Parallel()
	o := scanfake.Options{Table: fakeTable, Items: 300}
	srv := scanfake.New(o)
	t.Cleanup(srv.Close)
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	f.mu.Lock()
	f.stalls["GetRecords"], f.stallFor = 1_000_000, 200*time.Millisecond
	f.mu.Unlock()
	ddb := dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	s, _ := newSource(t, Config{StreamARN: f.arn, Snapshot: SnapshotInitial, SnapshotSegments: 2, SnapshotMargin: 100 * time.Millisecond}, ddb, f.client(), store)
	col := newCollector(ackNow)
	r := start(t, s, col.emit)
	waitUntil(t, 30*time.Second, "the load's first pages", func() bool { _, scans := srv.Throttled(); return scans >= 2 })
	time.Sleep(2 * time.Second)
	if n := col.len(); n != 0 {
		t.Fatalf("%d reads delivered while the stream's reader got no answer", n)
	}
	f.mu.Lock()
	f.stalls["GetRecords"] = 0
	f.mu.Unlock()
	waitLoad(t, s, 30*time.Second)
	_ = r.stop(t)
	checkItems(t, col.snapshot(), o.Items)
}
