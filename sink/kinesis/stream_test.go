package kinesis

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/hashkey"
	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
)

func TestFatalErrorsStopTheProducer(t *testing.T) {
	cases := []struct {
		name   string
		faults kinesisfake.Faults
		status string
		want   []string
	}{
		{"stream not found at start", kinesisfake.Faults{Errors: map[string]string{"DescribeStreamSummary": "ResourceNotFoundException"}}, "", []string{"null", "not found"}},
		{"no permission at start", kinesisfake.Faults{Errors: map[string]string{"DescribeStreamSummary": "AccessDeniedException"}}, "", []string{"null", "permission"}},
		{"credentials refused", kinesisfake.Faults{Errors: map[string]string{"DescribeStreamSummary": "UnrecognizedClientException"}}, "", []string{"null", "credentials refused"}},
		{"stream being deleted", kinesisfake.Faults{}, "DELETING", []string{"null", "being deleted"}},
		{"KMS key disabled", kinesisfake.Faults{FailRequests: 1, RequestError: "KMSDisabledException"}, "", []string{"null", "KMSDisabledException"}},
		{"KMS access denied", kinesisfake.Faults{FailRequests: 1, RequestError: "KMSAccessDeniedException"}, "", []string{"KMSAccessDeniedException"}},
		{"KMS opt-in", kinesisfake.Faults{FailRequests: 1, RequestError: "KMSOptInRequired"}, "", []string{"KMSOptInRequired"}},
		{"stream deleted while running", kinesisfake.Faults{FailRequests: 1, RequestError: "ResourceNotFoundException"}, "", []string{"null", "not found"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}})
			h.fake.SetFaults(tc.faults)
			if tc.status != "" {
				h.fake.SetOverrides(kinesisfake.Overrides{StreamStatus: aws.String(tc.status)})
			}
			h.putKeys(20, 5, 10)
			h.start()
			var err error
			select {
			case err = <-h.runErr:
				h.runErr <- err
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not stop")
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("Run: %v, want an error mentioning %q", err, w)
				}
			}
			if perr := h.p.Put(context.Background(), h.event("z", 0)); perr == nil {
				t.Fatal("Put after a fatal error succeeded")
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.ackCount != 0 {
				t.Fatalf("%d events acked though nothing was accepted", h.ackCount)
			}
			if st := h.p.Status().(Status); st.Fatal == "" {
				t.Errorf("status does not show the fatal error: %+v", st)
			}
		})
	}
}

func TestAutoDistributionRefused(t *testing.T) {
	auto := aws.String("AUTO")
	t.Run("at start", func(t *testing.T) {
		h := newHarness(t, harnessOpts{fake: kinesisfake.Options{OnDemand: true}})
		h.fake.SetOverrides(kinesisfake.Overrides{RecordDistributionStrategy: auto})
		h.start()
		err := <-h.runErr
		h.runErr <- err
		if err == nil || !strings.Contains(err.Error(), "AUTO") || !strings.Contains(err.Error(), "CDCBRIDGE_ORDERING") {
			t.Fatalf("Run: %v, want the AUTO explanation", err)
		}
	})
	t.Run("switched at run time", func(t *testing.T) {
		h := newHarness(t, harnessOpts{fake: kinesisfake.Options{OnDemand: true, Keep: true}, cfg: Config{SummaryInterval: 30 * time.Millisecond}})
		h.fake.SetOverrides(kinesisfake.Overrides{RecordDistributionStrategy: aws.String("USER_PARTITION_KEY")})
		h.start()
		h.putKeys(50, 5, 10)
		h.flush(10 * time.Second)
		h.fake.SetOverrides(kinesisfake.Overrides{RecordDistributionStrategy: auto})
		select {
		case err := <-h.runErr:
			h.runErr <- err
			if err == nil || !strings.Contains(err.Error(), "AUTO") {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run went on after the stream switched to AUTO")
		}
	})
	t.Run("allowed with ordering none", func(t *testing.T) {
		h := newHarness(t, harnessOpts{fake: kinesisfake.Options{OnDemand: true, Keep: true}, cfg: Config{Ordering: OrderingNone}})
		h.fake.SetOverrides(kinesisfake.Overrides{RecordDistributionStrategy: auto})
		h.start()
		h.putKeys(50, 5, 10)
		h.flush(10 * time.Second)
		h.checkAcks()
	})
}

func TestRecordLimitFromSummary(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{MaxRequestBytes: 10 << 20}})
	kib := int32(8 << 10) // 8 MiB records
	h.fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
	h.start()
	h.putKeys(2, 2, 3<<20) // 3 MiB rows: over 1 MiB, under the stream's limit
	h.flush(30 * time.Second)
	h.checkAcks()
	recs := fakeRecords(h.fake)
	h.checkStream(recs, true)
	for _, r := range recs {
		if r.ev.Oversize != nil {
			t.Fatalf("3 MiB record dead-lettered on a stream that takes 8 MiB")
		}
	}
	if st := h.p.Status().(Status); st.MaxRecordBytes != 8<<20 {
		t.Errorf("status max record bytes %d", st.MaxRecordBytes)
	}
}

func TestTruncateBarrier(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 4, Keep: true, Seed: 5}, cfg: Config{}})
	h.fake.SetFaults(kinesisfake.Faults{ThrottleEntries: 0.3})
	h.start()
	ctx := context.Background()
	var truncs []string
	for round := range 3 {
		h.putKeys(200, 50, 20)
		tr := h.event("unused", 0)
		tr.Op = cdc.OpTruncate
		tr.Key, tr.After = nil, nil
		tr.PartitionKey = cdc.TablePartitionKey("public.t")
		if err := h.put(ctx, tr); err != nil {
			t.Fatal(err)
		}
		truncs = append(truncs, tr.ID)
		_ = round
	}
	h.putKeys(200, 50, 20)
	h.flush(30 * time.Second)
	h.fake.SetFaults(kinesisfake.Faults{})
	h.checkAcks()
	recs := fakeRecords(h.fake)
	h.checkStream(recs, false)
	// In acceptance order, the first occurrence of each truncate comes after
	// the first occurrences of every event Put before it and before those of
	// every event Put after it.
	putIndex := map[string]int{}
	for _, ids := range h.order {
		for _, id := range ids {
			n, _ := strconv.ParseUint(strings.SplitN(id, ":", 2)[0], 16, 64)
			putIndex[id] = int(n)
		}
	}
	seen := map[string]bool{}
	var first []string
	for _, r := range recs {
		if !seen[r.ev.ID] {
			seen[r.ev.ID] = true
			first = append(first, r.ev.ID)
		}
	}
	pos := map[string]int{}
	for i, id := range first {
		pos[id] = i
	}
	for _, tr := range truncs {
		for id, pi := range putIndex {
			if id == tr {
				continue
			}
			before := pi < putIndex[tr]
			if before != (pos[id] < pos[tr]) {
				t.Fatalf("event %s (put %s the truncate %s) reached the stream %s it", id, map[bool]string{true: "before", false: "after"}[before], tr, map[bool]string{true: "before", false: "after"}[pos[id] < pos[tr]])
			}
		}
	}
}

func TestBudgetBoundsInflight(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{MaxInFlightEvents: 10, MaxInFlightBytes: 1 << 20}})
	h.fake.SetFaults(kinesisfake.Faults{SlowRequests: 1, Delay: 300 * time.Millisecond})
	h.start()
	h.putKeys(10, 10, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.p.Put(ctx, h.event("x", 0)); err != context.DeadlineExceeded {
		t.Fatalf("Put over the event budget: %v, want to block until the deadline", err)
	}
	h.fake.SetFaults(kinesisfake.Faults{})
	h.putKeys(20, 10, 10) // blocks until earlier events are acked
	h.flush(10 * time.Second)
	h.checkAcks()

	// An event larger than the whole byte budget is admitted alone.
	h2 := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{MaxInFlightBytes: 4 << 10}})
	h2.start()
	h2.putKeys(3, 3, 20<<10)
	h2.flush(10 * time.Second)
	h2.checkAcks()
	if st := h2.p.Status().(Status); st.InflightBytes != 0 || st.InflightEvents != 0 {
		t.Errorf("budget not returned: %+v", st)
	}
}

// Reservations share the byte budget with records: Put waits while a
// reservation fills it, a reservation waits while records do, and each
// goes on once the other is returned.
func TestReserveSharesBudget(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{MaxInFlightBytes: 64 << 10, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}})
	h.start()
	if got := h.p.InFlightBudget(); got != 64<<10 {
		t.Fatalf("InFlightBudget() = %d, want %d", got, 64<<10)
	}
	ctx := context.Background()
	wait := func(what string, f func(context.Context) error) {
		t.Helper()
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if err := f(short); err != context.DeadlineExceeded {
			t.Fatalf("%s: %v, want to wait", what, err)
		}
	}
	// Every entry is throttled: what is Put stays in flight. (An event is
	// admitted whatever is reserved when nothing is in flight: the
	// reservation's holder may be waiting for events to go out.)
	h.fake.SetFaults(kinesisfake.Faults{ThrottleEntries: 1})
	if err := h.p.Reserve(ctx, 60<<10); err != nil {
		t.Fatal(err)
	}
	h.putKeys(1, 1, 10) // fits beside it
	wait("Put beside a reservation filling the budget", func(ctx context.Context) error { return h.put(ctx, h.event("big", 8<<10)) })
	h.p.Unreserve(60 << 10)
	h.putKeys(5, 5, 8<<10) // 48 KiB in flight in all
	wait("Reserve while records fill the budget", func(ctx context.Context) error { return h.p.Reserve(ctx, 40<<10) })
	h.fake.SetFaults(kinesisfake.Faults{})
	if err := h.p.Reserve(ctx, 40<<10); err != nil { // once they are accepted
		t.Fatal(err)
	}
	h.p.Unreserve(40 << 10)
	h.flush(10 * time.Second)
	h.checkAcks()
}

func TestFlushWaitsForAcks(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{Linger: time.Hour}})
	h.start()
	h.putKeys(100, 10, 10)
	h.flush(10 * time.Second) // the hour-long linger must not hold it
	h.mu.Lock()
	n := h.ackCount
	h.mu.Unlock()
	if n != 100 {
		t.Fatalf("Flush returned with %d of 100 events acked", n)
	}
}

func TestReshardingNullMode(t *testing.T) {
	for _, agg := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "aggregated"}[agg], func(t *testing.T) {
			h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 2, Keep: true}, cfg: Config{Aggregate: agg}})
			h.start()
			h.putKeys(500, 60, 50)
			h.flush(10 * time.Second)
			kids, err := h.fake.Split("shardId-000000000000")
			if err != nil {
				t.Fatal(err)
			}
			h.putKeys(500, 60, 50)
			h.flush(10 * time.Second)
			if _, err := h.fake.Merge(kids[1], "shardId-000000000001"); err != nil {
				t.Fatal(err)
			}
			h.putKeys(500, 60, 50)
			h.flush(10 * time.Second)
			h.checkAcks()
			recs := fakeRecords(h.fake)
			h.checkStream(recs, true)
			// Every user record of an aggregate that counts lies in its shard.
			c := client(t, h.fake.URL)
			ls, err := c.ListShards(context.Background(), &kinesis.ListShardsInput{StreamName: aws.String("null")})
			if err != nil {
				t.Fatal(err)
			}
			ranges := map[string][2]hashkey.Key{}
			for _, s := range ls.Shards {
				lo, _ := hashkey.Parse(*s.HashKeyRange.StartingHashKey)
				hi, _ := hashkey.Parse(*s.HashKeyRange.EndingHashKey)
				ranges[*s.ShardId] = [2]hashkey.Key{lo, hi}
			}
			inRange := map[string]bool{}
			for _, r := range recs {
				rg := ranges[r.shard]
				if hh := hashkey.Of(r.pk); !hh.Less(rg[0]) && !rg[1].Less(hh) {
					inRange[r.ev.ID] = true
				}
			}
			for _, ids := range h.order {
				for _, id := range ids {
					if !inRange[id] {
						t.Errorf("event %s never landed in a shard whose range holds its key (KCL would drop it)", id)
					}
				}
			}
			if q := h.fake.Counts().ShardMapQueries; q < 3 {
				t.Errorf("%d ListShards calls: the map was not refreshed after resharding", q)
			}
		})
	}
}

func TestSummaryReread(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{SummaryInterval: 20 * time.Millisecond}})
	creating := aws.String("CREATING")
	h.fake.SetOverrides(kinesisfake.Overrides{StreamStatus: creating})
	h.start()
	time.Sleep(150 * time.Millisecond)
	if h.p.Ready() {
		t.Fatal("ready while the stream is still being created")
	}
	h.fake.SetOverrides(kinesisfake.Overrides{})
	deadline := time.Now().Add(5 * time.Second)
	for !h.p.Ready() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !h.p.Ready() {
		t.Fatal("not ready once the stream is ACTIVE")
	}
	// The record limit shrinks at run time: a record over the new limit
	// goes to the dead-letter directory instead of being rejected.
	kib := int32(1)
	h.fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
	for time.Now().Before(deadline) {
		if st := h.p.Status().(Status); st.MaxRecordBytes == 1024 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.putKeys(5, 5, 2000)
	h.flush(10 * time.Second)
	h.checkAcks()
	n := 0
	for _, r := range fakeRecords(h.fake) {
		if r.ev.Oversize != nil {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d placeholders after the limit shrank, want 5", n)
	}
	b, err := json.Marshal(h.p.Status())
	if err != nil || !strings.Contains(string(b), `"max_record_bytes":1024`) {
		t.Fatalf("status JSON %s: %v", b, err)
	}
}
