package kinesis

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/hashkey"
	"github.com/cdcbridge/cdcbridge/kpl"
	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// userRec is a user record as read back from the stream.
type userRec struct {
	shard      string
	recordPK   string // the Kinesis record's partition key
	aggregated bool
	compressed bool
	pk         string // the user record's partition key
	ev         *cdc.Event
	data       []byte
}

// harness runs a producer against a fake Kinesis and checks the promises:
// every event acked exactly once, never before the fake accepted it, and
// per-key order of first occurrences.
type harness struct {
	t      *testing.T
	fake   *kinesisfake.Server
	outage *kinesisfake.Outage
	p      *Producer
	reg    *prometheus.Registry

	mu       sync.Mutex
	applied  map[string]bool
	acks     map[string]int
	early    []string
	order    map[string][]string // partition key -> ids in Put order
	n        int
	runErr   chan error
	cancel   context.CancelFunc
	ackCount int

	aggregates, noEHK int // accepted aggregates, and those without an explicit hash key
}

type harnessOpts struct {
	fake     kinesisfake.Options
	upstream *testenv.Kinesis
	shards   int32
	cfg      Config
	outage   bool // put an Outage proxy between the producer and the fake
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, applied: map[string]bool{}, acks: map[string]int{}, order: map[string][]string{}, reg: prometheus.NewRegistry()}
	fo := o.fake
	fo.OnAccept = h.onAccept
	stream := "null"
	if o.upstream != nil {
		stream = testenv.UniqueName("sink")
		shards := o.shards
		if shards == 0 {
			shards = 2
		}
		if err := o.upstream.CreateStream(context.Background(), stream, shards); err != nil {
			t.Fatal(err)
		}
		fo.Upstream = o.upstream.Endpoint
	} else if fo.StreamName != "" {
		stream = fo.StreamName
	}
	h.fake = kinesisfake.New(fo)
	t.Cleanup(h.fake.Close)
	cfg := o.cfg
	if cfg.Stream == "" {
		cfg.Stream = stream
	}
	if cfg.DLQDir == "" {
		cfg.DLQDir = t.TempDir()
	}
	if cfg.Linger == 0 {
		cfg.Linger = 5 * time.Millisecond
	}
	if cfg.RetryBase == 0 {
		cfg.RetryBase = 5 * time.Millisecond
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 50 * time.Millisecond
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 2 * time.Second
	}
	endpoint := h.fake.URL
	if o.outage {
		out, err := kinesisfake.NewOutage(h.fake.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { out.Close() })
		h.outage = out
		endpoint = out.URL
	}
	awsCfg := testenv.AWSConfig()
	awsCfg.BaseEndpoint = aws.String(endpoint)
	p, err := New(cfg, NewClient(awsCfg, cfg), h.reg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	return h
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Logf("%s", b)
	return len(b), nil
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.runErr = make(chan error, 1)
	go func() { h.runErr <- h.p.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case <-h.runErr:
		case <-time.After(10 * time.Second):
			h.t.Error("Run did not return after cancel")
		}
	})
}

func (h *harness) onAccept(r kinesisfake.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Aggregated {
		h.aggregates++
		if r.ExplicitHashKey == "" {
			h.noEHK++
		}
	}
	for _, u := range r.Users {
		e, err := cdc.Decode(u.Data)
		if err != nil {
			continue
		}
		h.applied[e.ID] = true
	}
}

// event makes the i-th event of key.
func (h *harness) event(key string, size int) *cdc.Event {
	h.mu.Lock()
	h.n++
	i := h.n
	h.mu.Unlock()
	id := cdc.ChangeID(uint64(1000+i), 1)
	pad := ""
	if size > 0 {
		pad = string(make([]byte, 0))
		b := make([]byte, size)
		for j := range b {
			b[j] = 'a' + byte(j%26)
		}
		pad = string(b)
	}
	e := &cdc.Event{
		ID:           id,
		Source:       "/cdcbridge/test",
		Subject:      "public.t",
		PartitionKey: cdc.PartitionKey("public.t", []byte(`["`+key+`"]`)),
		Sequence:     id,
		Op:           cdc.OpUpdate,
		Key:          []byte(`{"id":"` + key + `"}`),
		After:        []byte(fmt.Sprintf(`{"id":%q,"n":%d,"pad":%q}`, key, i, pad)),
		Info:         cdc.SourceInfo{CommitLSN: cdc.FormatLSN(uint64(1000 + i)), Ordinal: 1, Schema: "public", Table: "t"},
	}
	e.OnAck = func() { h.ack(id) }
	return e
}

func (h *harness) ack(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.acks[id]++
	h.ackCount++
	if !h.applied[id] {
		h.early = append(h.early, id)
	}
}

// put puts e and notes its key order. Put must leave e as it was.
func (h *harness) put(ctx context.Context, e *cdc.Event) error {
	pk, id := e.PartitionKey, e.ID
	if err := h.p.Put(ctx, e); err != nil {
		return err
	}
	if e.PartitionKey != pk || e.ID != id {
		h.t.Errorf("Put changed the caller's event: partition key %q -> %q, id %s -> %s", pk, e.PartitionKey, id, e.ID)
	}
	h.mu.Lock()
	h.order[pk] = append(h.order[pk], id)
	h.mu.Unlock()
	return nil
}

// putKeys puts n events spread over keys and returns their ids.
func (h *harness) putKeys(n, keys, size int) {
	h.t.Helper()
	ctx := context.Background()
	for i := range n {
		if err := h.put(ctx, h.event(fmt.Sprintf("k%d", i%keys), size)); err != nil {
			h.t.Fatalf("Put %d: %v", i, err)
		}
	}
}

func (h *harness) flush(timeout time.Duration) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := h.p.Flush(ctx); err != nil {
		h.t.Fatalf("Flush: %v (status %+v)", err, h.p.Status())
	}
}

// checkAcks: every event acked exactly once, none before it was accepted.
func (h *harness) checkAcks() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	total := 0
	for pk, ids := range h.order {
		for _, id := range ids {
			if n := h.acks[id]; n != 1 {
				h.t.Errorf("event %s (key %s) acked %d times, want 1", id, pk, n)
			}
			total++
		}
	}
	if len(h.acks) != total {
		h.t.Errorf("%d events acked, %d put", len(h.acks), total)
	}
	if h.noEHK > 0 {
		h.t.Errorf("%d of %d aggregates carried no explicit hash key", h.noEHK, h.aggregates)
	}
	if len(h.early) > 0 {
		h.t.Errorf("%d events acked before the stream accepted them, e.g. %s", len(h.early), h.early[0])
	}
}

// checkStream checks the records read back: each user record is a valid
// envelope whose partitionkey is its own, every acked event is there, and
// with wantOrder each key's first occurrences are in Put order.
func (h *harness) checkStream(recs []userRec, wantOrder bool) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	got := map[string][]string{}
	for _, u := range recs {
		if u.ev == nil {
			h.t.Errorf("shard %s: user record is not an envelope: %.80q", u.shard, u.data)
			continue
		}
		if u.ev.PartitionKey != u.pk {
			h.t.Errorf("event %s: envelope partitionkey %q, record key %q", u.ev.ID, u.ev.PartitionKey, u.pk)
		}
		if !u.aggregated && u.pk != u.recordPK {
			h.t.Errorf("event %s: user key %q differs from the record's %q", u.ev.ID, u.pk, u.recordPK)
		}
		if seen[u.ev.ID] {
			continue
		}
		seen[u.ev.ID] = true
		got[u.pk] = append(got[u.pk], u.ev.ID)
	}
	for pk, ids := range h.order {
		for _, id := range ids {
			if h.acks[id] > 0 && !seen[id] {
				h.t.Errorf("event %s acked but not in the stream", id)
			}
		}
		if wantOrder && !slices.Equal(got[pk], ids) {
			h.t.Errorf("key %s: stream order (first occurrences) %v, Put order %v", pk, head(got[pk]), head(ids))
		}
	}
}

func head(s []string) []string {
	if len(s) > 8 {
		return append(s[:8:8], "...")
	}
	return s
}

// fakeRecords returns the user records a null-mode fake kept.
func fakeRecords(f *kinesisfake.Server) []userRec {
	var out []userRec
	for _, r := range f.Records() {
		for _, u := range r.Users {
			e, _ := cdc.Decode(u.Data)
			out = append(out, userRec{shard: r.ShardID, recordPK: r.PartitionKey, aggregated: r.Aggregated, compressed: r.Compressed, pk: u.PartitionKey, ev: e, data: u.Data})
		}
	}
	return out
}

// readStream reads every shard of a stream from an emulator, parents
// before children, de-aggregating, and checks that every user record's
// hash key lies in the range of the shard it was read from (what KCL
// de-aggregation requires).
func readStream(t *testing.T, c *kinesis.Client, stream string) []userRec {
	t.Helper()
	recs, dropped := readStreamKCL(t, c, stream)
	if dropped > 0 {
		t.Errorf("%d user records hash outside the shard they were read from (KCL would drop them)", dropped)
	}
	return recs
}

// readStreamKCL reads as KCL does: user records of an aggregate whose hash
// key is outside the shard's range are dropped (and counted).
func readStreamKCL(t *testing.T, c *kinesis.Client, stream string) (recs []userRec, dropped int) {
	t.Helper()
	ctx := context.Background()
	out, err := c.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	shards := out.Shards
	depth := func(s types.Shard) int {
		d := 0
		for p := aws.ToString(s.ParentShardId); p != ""; d++ {
			next := ""
			for _, x := range shards {
				if aws.ToString(x.ShardId) == p {
					next = aws.ToString(x.ParentShardId)
				}
			}
			p = next
		}
		return d
	}
	slices.SortStableFunc(shards, func(a, b types.Shard) int { return depth(a) - depth(b) })
	for _, s := range shards {
		lo, _ := hashkey.Parse(aws.ToString(s.HashKeyRange.StartingHashKey))
		hi, _ := hashkey.Parse(aws.ToString(s.HashKeyRange.EndingHashKey))
		it, err := c.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: s.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
		if err != nil {
			t.Fatal(err)
		}
		iter := it.ShardIterator
		for iter != nil {
			gr, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range gr.Records {
				users := []kpl.UserRecord{{PartitionKey: aws.ToString(r.PartitionKey), Data: r.Data}}
				zipped := kpl.IsCompressed(r.Data)
				agg := kpl.IsAggregated(r.Data) || zipped
				if agg {
					if users, err = kpl.Decode(r.Data); err != nil {
						t.Fatalf("shard %s: aggregate does not decode: %v", aws.ToString(s.ShardId), err)
					}
				}
				for _, u := range users {
					if h := hashkey.Of(u.PartitionKey); agg && (h.Less(lo) || hi.Less(h)) {
						dropped++
						continue
					}
					e, _ := cdc.Decode(u.Data)
					recs = append(recs, userRec{shard: aws.ToString(s.ShardId), recordPK: aws.ToString(r.PartitionKey), aggregated: agg, compressed: zipped, pk: u.PartitionKey, ev: e, data: u.Data})
				}
			}
			if len(gr.Records) == 0 || gr.NextShardIterator == nil {
				if gr.MillisBehindLatest == nil || *gr.MillisBehindLatest == 0 || gr.NextShardIterator == nil {
					break
				}
			}
			iter = gr.NextShardIterator
		}
	}
	return recs, dropped
}

type eventT = cdc.Event

func awsConfigFor(url string) aws.Config {
	c := testenv.AWSConfig()
	c.BaseEndpoint = aws.String(url)
	return c
}

// counterValue reads one labelled counter from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					match = true
				}
			}
			if match && m.Counter != nil {
				sum += m.Counter.GetValue()
			}
		}
	}
	return sum
}

func client(t *testing.T, url string) *kinesis.Client {
	t.Helper()
	return kinesis.NewFromConfig(awsConfigFor(url))
}
