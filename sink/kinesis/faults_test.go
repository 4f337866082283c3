package kinesis

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
)

// TestFaults runs a keyed workload under each fault the fake injects and
// checks every promise: each event acked exactly once, never before the
// stream accepted it, every acked event in the stream, and each key's
// first occurrences in Put order.
func TestFaults(t *testing.T) {
	cases := []struct {
		name   string
		faults kinesisfake.Faults
		cfg    Config
	}{
		{"entry throttling 30%", kinesisfake.Faults{ThrottleEntries: 0.3}, Config{}},
		{"internal failure entries", kinesisfake.Faults{FailEntries: 0.2, ThrottleEntries: 0.1}, Config{}},
		{"request 500s", kinesisfake.Faults{FailRequests: 0.3}, Config{}},
		{"request throttling", kinesisfake.Faults{FailRequests: 0.3, RequestError: "ProvisionedThroughputExceededException"}, Config{}},
		{"KMS throttling", kinesisfake.Faults{FailRequests: 0.3, RequestError: "KMSThrottlingException"}, Config{}},
		{"503", kinesisfake.Faults{FailRequests: 0.3, RequestError: "ServiceUnavailable"}, Config{}},
		{"expired credentials", kinesisfake.Faults{FailRequests: 0.2, RequestError: "ExpiredTokenException"}, Config{}},
		{"unknown error code", kinesisfake.Faults{FailRequests: 0.2, RequestError: "SomethingNewException"}, Config{}},
		{"responses lost by reset", kinesisfake.Faults{LoseResponses: 0.25, LoseMode: kinesisfake.Reset}, Config{}},
		{"responses truncated", kinesisfake.Faults{LoseResponses: 0.25, LoseMode: kinesisfake.Truncate}, Config{}},
		{"responses lost by timeout", kinesisfake.Faults{LoseResponses: 0.1, LoseMode: kinesisfake.Hang}, Config{RequestTimeout: time.Second}},
		{"slow responses past the timeout", kinesisfake.Faults{SlowRequests: 0.1, Delay: 2 * time.Second}, Config{RequestTimeout: time.Second}},
		{"everything at once", kinesisfake.Faults{ThrottleEntries: 0.2, FailEntries: 0.05, FailRequests: 0.1, LoseResponses: 0.1}, Config{}},
	}
	for _, tc := range cases {
		for _, mode := range []string{"plain", "aggregated", "gzip"} {
			name := tc.name
			if mode != "plain" {
				name += "/" + mode
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				cfg := tc.cfg
				cfg.Aggregate = mode != "plain"
				cfg.CompressAggregates = mode == "gzip"
				cfg.AggregateMaxBytes = 4 << 10 // several aggregates per shard
				h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 3, Keep: true, Seed: 7}, cfg: cfg})
				h.fake.SetFaults(tc.faults)
				h.start()
				injected := func() bool {
					c := h.fake.Counts()
					return c.FailedEntries+c.FailedRequests+c.LostResponses+c.SlowRequests > 0
				}
				h.putKeys(1500, 40, 200)
				h.flush(60 * time.Second)
				// Few large requests may all escape a 10% fault: go on
				// until one was injected.
				for round := 0; round < 20 && !injected(); round++ {
					h.putKeys(300, 40, 200)
					h.flush(60 * time.Second)
				}
				h.fake.SetFaults(kinesisfake.Faults{})
				h.checkAcks()
				h.checkStream(fakeRecords(h.fake), true)
				if !injected() {
					t.Errorf("no fault was injected: %+v", h.fake.Counts())
				}
			})
		}
	}
}

func TestOrderingNoneDeliversEverything(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 3, Keep: true, Seed: 3}, cfg: Config{Ordering: OrderingNone}})
	h.putKeys(2000, 5, 100) // queued before Run
	h.start()
	h.flush(30 * time.Second)
	// Several records of one key share a request when order is not kept
	// (ORDERING=key would need at least 400 requests).
	if c := h.fake.Counts(); c.PutRequests >= 400 {
		t.Errorf("%d requests for 2000 records over 5 keys: keys are serialised", c.PutRequests)
	}
	h.fake.SetFaults(kinesisfake.Faults{ThrottleEntries: 0.3, LoseResponses: 0.1})
	h.putKeys(2000, 5, 100)
	h.flush(30 * time.Second)
	h.checkAcks()
	h.checkStream(fakeRecords(h.fake), false)
}

// TestHotKeyIsSerialised checks that a key never has two records in
// flight: with ORDERING=key and no aggregation, N records of one key take
// at least N requests.
func TestHotKeyIsSerialised(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 1, Keep: true}, cfg: Config{}})
	h.start()
	h.putKeys(200, 1, 10)
	h.flush(30 * time.Second)
	h.checkAcks()
	h.checkStream(fakeRecords(h.fake), true)
	if c := h.fake.Counts(); c.PutRequests < 200 {
		t.Errorf("%d requests for 200 records of one key: two were in flight at once", c.PutRequests)
	}
}

// TestAggregationLiftsHotKeyBound: with aggregation, a run of one key's
// records goes in one aggregate.
func TestAggregationLiftsHotKeyBound(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 1, Keep: true}, cfg: Config{Aggregate: true}})
	h.putKeys(200, 1, 10) // before Run: all queued
	h.start()
	h.flush(30 * time.Second)
	h.checkAcks()
	h.checkStream(fakeRecords(h.fake), true)
	if c := h.fake.Counts(); c.PutRequests > 5 {
		t.Errorf("%d requests for 200 queued records of one key with aggregation", c.PutRequests)
	}
}

func TestStatusShowsFailingRetries(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{}})
	h.fake.SetFaults(kinesisfake.Faults{FailRequests: 1, RequestError: "InternalFailure"})
	h.start()
	h.putKeys(10, 10, 10)
	deadline := time.Now().Add(10 * time.Second)
	var st Status
	for time.Now().Before(deadline) {
		st = h.p.Status().(Status)
		if st.FailingRequests >= 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.FailingRequests < 3 || len(st.Degraded) == 0 || !st.Ready {
		t.Fatalf("status while every request fails: %+v", st)
	}
	if st.InflightEvents != 10 {
		t.Errorf("inflight events %d, want 10", st.InflightEvents)
	}
	h.mu.Lock()
	acked := h.ackCount
	h.mu.Unlock()
	if acked != 0 {
		t.Fatalf("%d events acked while every request failed", acked)
	}
	h.fake.SetFaults(kinesisfake.Faults{})
	h.flush(10 * time.Second)
	h.checkAcks()
	if got := counterValue(t, h.reg, "cdcbridge_kinesis_put_requests_total", "error"); got < 3 {
		t.Errorf("put_requests_total{result=error} = %v", got)
	}
	if st := h.p.Status().(Status); st.FailingRequests != 0 {
		t.Errorf("still failing after recovery: %+v", st)
	}
}

func TestConnectTimeout(t *testing.T) {
	u, err := kinesisfake.NewUnaccepting()
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	cfg := Config{Stream: "s", DLQDir: t.TempDir(), ConnectTimeout: 100 * time.Millisecond, RequestTimeout: 5 * time.Second,
		RetryBase: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond}
	awsCfg := awsConfigFor(u.URL)
	p, err := New(cfg, NewClient(awsCfg, cfg), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(ctx) }()
	var st Status
	for time.Since(start) < 5*time.Second {
		st = p.Status().(Status)
		if len(st.Degraded) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The first attempt failed within the connect timeout, not the request timeout.
	if len(st.Degraded) == 0 || time.Since(start) > 2*time.Second {
		t.Fatalf("after %v: status %+v", time.Since(start), st)
	}
	if p.Ready() {
		t.Fatal("ready without a connection")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if err := p.Put(context.Background(), (&harness{}).eventNoAck("k")); err != ErrClosed {
		t.Fatalf("Put after Run: %v, want ErrClosed", err)
	}
}

func (h *harness) eventNoAck(key string) (e *eventT) {
	e = (&harness{applied: map[string]bool{}, acks: map[string]int{}}).event(key, 0)
	e.OnAck = nil
	return e
}

// TestPartitionKeys: records carry the key the source built, hashed form
// included; an event without a valid key is refused and nothing of it is
// kept, acked or sent.
func TestPartitionKeys(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}})
	h.start()
	ctx := context.Background()
	long := h.event("x", 0)
	long.PartitionKey = cdc.PartitionKey("public.t", []byte(fmt.Sprintf(`["%0300d"]`, 7)))
	table := h.event("y", 0)
	table.PartitionKey = cdc.TablePartitionKey("public.t")
	for _, e := range []*eventT{long, table} {
		if err := h.put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, pk := range []string{"", "public.t:[\"" + strings.Repeat("z", 300) + "\"]", "bad\xffkey"} {
		e := h.event("z", 0)
		e.PartitionKey = pk
		if err := h.p.Put(ctx, e); err == nil || !strings.Contains(err.Error(), e.ID) {
			t.Errorf("Put with key %.40q: %v, want an error naming event %s", pk, err, e.ID)
		}
		if e.PartitionKey != pk {
			t.Errorf("Put changed the refused key %.40q to %.40q", pk, e.PartitionKey)
		}
	}
	h.flush(10 * time.Second)
	h.checkAcks()
	recs := fakeRecords(h.fake)
	h.checkStream(recs, true)
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	if pk := recs[0].pk; len(pk) > 256 || pk != long.PartitionKey || pk[:len("public.t:sha256:")] != "public.t:sha256:" {
		t.Errorf("long key became %q", pk)
	}
	if pk := recs[1].pk; pk != "public.t:*" {
		t.Errorf("table key became %q", pk)
	}
	if st := h.p.Status().(Status); st.InflightEvents != 0 {
		t.Errorf("%d events in flight after the refused ones", st.InflightEvents)
	}
}

func TestRequestLimitsHonoured(t *testing.T) {
	h := newHarness(t, harnessOpts{
		fake: kinesisfake.Options{Shards: 8, Keep: true, Limits: kinesisfake.Limits{MaxRequestBytes: 64 << 10}},
		cfg:  Config{MaxRequestBytes: 64 << 10, Linger: 200 * time.Millisecond},
	})
	h.putKeys(3000, 3000, 10) // queued before Run: more than 500 ready at once
	h.putKeys(200, 200, 3000) // and more than 64 KiB
	h.start()
	h.flush(30 * time.Second)
	h.checkAcks()
	if c := h.fake.Counts(); c.Rejected != 0 {
		t.Fatalf("%d requests rejected for exceeding AWS limits", c.Rejected)
	}
}

// TestOutageMidRun makes the endpoint unreachable (connects hang until
// ConnectTimeout) while records flow, then brings it back.
func TestOutageMidRun(t *testing.T) {
	for _, agg := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "aggregated"}[agg], func(t *testing.T) {
			h := newHarness(t, harnessOpts{outage: true, fake: kinesisfake.Options{Shards: 2, Keep: true},
				cfg: Config{Aggregate: agg, ConnectTimeout: 100 * time.Millisecond, RequestTimeout: 2 * time.Second}})
			h.start()
			h.putKeys(500, 30, 100)
			h.flush(10 * time.Second)
			if err := h.outage.SetDown(true); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.putKeys(1000, 30, 100)
			}()
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				// Wait for a failure of the connect itself, not only the
				// reset of the connections the outage cut.
				if st := h.p.Status().(Status); st.FailingRequests > 0 && strings.Contains(st.LastError, "dial") {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			st := h.p.Status().(Status)
			if st.FailingRequests == 0 || !st.Ready || !strings.Contains(st.LastError, "dial") {
				t.Errorf("status during the outage: %+v", st)
			}
			if err := h.outage.SetDown(false); err != nil {
				t.Fatal(err)
			}
			<-done
			h.flush(30 * time.Second)
			h.checkAcks()
			h.checkStream(fakeRecords(h.fake), true)
		})
	}
}

// TestLoopDoesNotSpin: while requests fail and the producer backs off,
// its loop waits instead of spinning (counted through Heartbeat).
func TestLoopDoesNotSpin(t *testing.T) {
	var beats atomic.Int64
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true},
		cfg: Config{RetryBase: 400 * time.Millisecond, RetryMax: 400 * time.Millisecond, Heartbeat: func() { beats.Add(1) }}})
	h.fake.SetFaults(kinesisfake.Faults{FailRequests: 1})
	h.start()
	h.putKeys(200, 50, 10)
	time.Sleep(200 * time.Millisecond)
	before := beats.Load()
	time.Sleep(time.Second)
	if n := beats.Load() - before; n > 200 || n < 1 {
		t.Errorf("%d loop iterations in a second of backing off", n)
	}
	h.fake.SetFaults(kinesisfake.Faults{})
	h.flush(10 * time.Second)
	h.checkAcks()
}
