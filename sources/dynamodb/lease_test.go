package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cdcbridge/cdcbridge/cdc"
	ddbstore "github.com/cdcbridge/cdcbridge/checkpoint/dynamodb"
	"github.com/cdcbridge/cdcbridge/internal/fence"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// Lease tests: several sources on one scripted stream (fakeStreams), their
// leases in a table of DynamoDB Local, each source with its own HTTP
// clients that a test can cut off.

const (
	testLease = 1500 * time.Millisecond
	testSend  = 500 * time.Millisecond
)

// cutter is an HTTP client whose requests hang until their context ends
// while cut: a host that lost its network but keeps running.
type cutter struct {
	base *http.Client
	cut  atomic.Bool
}

func (c *cutter) Do(req *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	return c.base.Do(req)
}

// emitted is one event as an instance handed it to its sink.
type emitted struct {
	inst string
	at   time.Time
	e    *cdc.Event
}

// fleet runs several sources on one stream and keeps, in one timeline,
// every event they emit.
type fleet struct {
	t     *testing.T
	f     *fakeStreams
	table string

	mu       sync.Mutex
	timeline []emitted
	pending  map[string][]*cdc.Event // per instance: held without ack
	// stall, when set, is asked before each emit; the emit it answers
	// true for waits until the reader's context ends and refuses the
	// event, as a sink whose budget is used up does, and stalled gets
	// that event (once).
	stall   func() bool
	stalled chan *cdc.Event
}

type instance struct {
	name  string
	src   *Source
	reg   *prometheus.Registry
	run   *running
	cut   *cutter
	gate  *fence.Gate
	owner string
}

func newFleet(t *testing.T, f *fakeStreams) *fleet {
	return &fleet{t: t, f: f, table: testenv.UniqueName("leases"), pending: map[string][]*cdc.Event{}}
}

// start runs one source. ack false keeps its events unacknowledged, as a
// sink that cannot reach Kinesis would.
func (fl *fleet) start(name string, ack bool, gate *fence.Gate) *instance {
	t := fl.t
	t.Helper()
	d := testenv.DynamoDB(t)
	cut := &cutter{base: &http.Client{}}
	db := dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(d.Endpoint)
		o.HTTPClient = cut
		o.RetryMaxAttempts = 1
	})
	store, err := ddbstore.Open(context.Background(), db, fl.table)
	if err != nil {
		t.Fatal(err)
	}
	owner := fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
	leases, err := ddbstore.NewLeases(store, owner)
	if err != nil {
		t.Fatal(err)
	}
	streams := dynamodbstreams.NewFromConfig(testenv.AWSConfig(), func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = aws.String(fl.f.srv.URL)
		o.HTTPClient = cut
	})
	cfg := testCfg(Config{StreamARN: fl.f.arn, Leases: leases, LeaseDuration: testLease, SendTimeout: testSend,
		Fence: gate, RequestTimeout: 2 * time.Second})
	reg := prometheus.NewRegistry()
	src, err := New(cfg, nil, streams, store, reg, testLogger(t).With("instance", name))
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{name: name, src: src, reg: reg, cut: cut, gate: gate, owner: owner}
	emit := func(ctx context.Context, e *cdc.Event) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		fl.mu.Lock()
		if fl.stall != nil && fl.stall() {
			fl.stall = nil
			fl.mu.Unlock()
			fl.stalled <- e
			<-ctx.Done()
			return ctx.Err()
		}
		fl.timeline = append(fl.timeline, emitted{inst: name, at: time.Now(), e: e})
		if !ack {
			fl.pending[name] = append(fl.pending[name], e)
		}
		fl.mu.Unlock()
		if ack {
			e.Ack()
		}
		return nil
	}
	in.run = start(t, src, emit)
	return in
}

func (in *instance) status() Status { return in.src.Status().(Status) }

func (in *instance) held() int {
	st := in.status()
	if st.Leases == nil {
		return 0
	}
	return st.Leases.Held
}

func (fl *fleet) events() []emitted {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return slices.Clone(fl.timeline)
}

// waitSpread waits until the running instances hold (and read) counts of
// leases that differ by at most one and cover n shards.
func waitSpread(t *testing.T, n int, timeout time.Duration, ins ...*instance) {
	t.Helper()
	waitUntil(t, timeout, fmt.Sprintf("%d leases spread evenly over %d instances", n, len(ins)), func() bool {
		total, lo, hi := 0, n, 0
		for _, in := range ins {
			st := in.status()
			if st.Leases == nil || st.Leases.Starting > 0 || st.Leases.Lapsed > 0 {
				return false
			}
			h := st.Leases.Held
			total += h
			lo, hi = min(lo, h), max(hi, h)
		}
		return total == n && hi-lo <= 1
	})
}

// overlaps returns, per shard, the longest time two instances emitted its
// records at once: each instance's emits of a shard form intervals split
// at pauses longer than gap, and the intersections of intervals of
// different instances are measured.
func overlaps(events []emitted, gap time.Duration) map[string]time.Duration {
	type span struct{ from, to time.Time }
	per := map[string]map[string][]span{} // shard -> instance -> spans
	for _, ev := range events {
		sh := ev.e.Info.ShardID
		if per[sh] == nil {
			per[sh] = map[string][]span{}
		}
		ss := per[sh][ev.inst]
		if n := len(ss); n > 0 && ev.at.Sub(ss[n-1].to) <= gap {
			ss[n-1].to = ev.at
		} else {
			ss = append(ss, span{ev.at, ev.at})
		}
		per[sh][ev.inst] = ss
	}
	out := map[string]time.Duration{}
	for sh, byInst := range per {
		for a, sa := range byInst {
			for b, sb := range byInst {
				if a >= b {
					continue
				}
				for _, x := range sa {
					for _, y := range sb {
						from, to := x.from, x.to
						if y.from.After(from) {
							from = y.from
						}
						if y.to.Before(to) {
							to = y.to
						}
						if d := to.Sub(from); d > out[sh] {
							out[sh] = d
						}
					}
				}
			}
		}
	}
	return out
}

// writer appends versions of items to the fake's open shards until
// stopped; items stay on their shard, so their order is checkable.
type writer struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	want map[itemVersion]bool
}

func startWriter(f *fakeStreams, shards []string, itemsPerShard int, every time.Duration, want map[itemVersion]bool) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{}), want: want}
	go func() {
		defer close(w.done)
		v := map[int]int{}
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
			s := i % len(shards)
			item := s*itemsPerShard + (i/len(shards))%itemsPerShard
			v[item]++
			if v[item] == 1 {
				v[item] = 2 // version 1 of each item is written before the start
			}
			f.put(shards[s], change(item, v[item]))
			w.mu.Lock()
			w.want[itemVersion{item, v[item]}] = true
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) halt() map[itemVersion]bool {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.want
}

// TestLeasesShareShards: three sources share six shards evenly; one that
// stops hands its leases back and the others continue at once; one cut off
// from the network stops reading before its leases expire and the others
// take them over; restored, it learns it lost them and steals back its
// share. Every change arrives, first occurrences in order per item, and no
// shard is read by two instances at once.
func TestLeasesShareShards(t *testing.T) {
	f := newFakeStreams(t)
	shards := []string{"shardId-0", "shardId-1", "shardId-2", "shardId-3", "shardId-4", "shardId-5"}
	const perShard = 5
	want := map[itemVersion]bool{}
	for s, id := range shards {
		f.addShard(id, "")
		for i := range perShard {
			f.put(id, change(s*perShard+i, 1))
			want[itemVersion{s*perShard + i, 1}] = true
		}
	}
	fl := newFleet(t, f)

	a := fl.start("a", true, nil)
	waitSpread(t, len(shards), 30*time.Second, a)
	b := fl.start("b", true, nil)
	c := fl.start("c", true, nil)
	w := startWriter(f, shards, perShard, 15*time.Millisecond, want)
	waitSpread(t, len(shards), 60*time.Second, a, b, c)
	if got := testutil.ToFloat64(b.src.m.leasesStolen) + testutil.ToFloat64(c.src.m.leasesStolen); got < 4 {
		t.Errorf("b and c stole %v leases to reach their share, want at least 4", got)
	}

	// b stops: it hands its leases back, a and c take them as free.
	takenBefore := testutil.ToFloat64(a.src.m.leasesTaken) + testutil.ToFloat64(c.src.m.leasesTaken)
	if err := b.run.stop(t); err != nil {
		t.Fatalf("b: %v", err)
	}
	if got := testutil.ToFloat64(b.src.m.leasesReleased); got != 2 {
		t.Errorf("b released %v leases on shutdown, want 2", got)
	}
	waitSpread(t, len(shards), 30*time.Second, a, c)
	if got := testutil.ToFloat64(a.src.m.leasesTaken) + testutil.ToFloat64(c.src.m.leasesTaken) - takenBefore; got < 2 {
		t.Errorf("a and c took %v leases after b stopped, want at least its 2", got)
	}

	// c is cut off from DynamoDB and its stream, and keeps running.
	c.cut.cut.Store(true)
	cutAt := time.Now()
	waitUntil(t, 30*time.Second, "a holding every lease", func() bool { return a.held() == len(shards) })
	if st := c.status(); st.Leases.Lapsed != 3 || len(st.Degraded) == 0 {
		t.Errorf("cut-off c: %d lapsed leases, degraded %v; want 3 lapsed and a reason", st.Leases.Lapsed, st.Degraded)
	}
	for _, ev := range fl.events() {
		if ev.inst == "c" && ev.at.After(cutAt.Add(testLease)) {
			t.Errorf("c emitted %s of shard %s %v after it was cut off, past its lease", ev.e.ID, ev.e.Info.ShardID, ev.at.Sub(cutAt))
			break
		}
	}

	// Restored, c finds its leases taken and steals back its share.
	c.cut.cut.Store(false)
	waitSpread(t, len(shards), 60*time.Second, a, c)
	if got := testutil.ToFloat64(c.src.m.leasesLost); got < 3 {
		t.Errorf("c lost %v leases, want at least its 3", got)
	}
	if got := testutil.ToFloat64(c.src.m.leaseRenewErrors); got == 0 {
		t.Error("no renewal errors counted while c was cut off")
	}

	want = w.halt()
	waitUntil(t, 30*time.Second, "every change emitted", func() bool {
		got := map[itemVersion]bool{}
		for _, ev := range fl.events() {
			got[versionOf(t, ev.e)] = true
		}
		return len(got) >= len(want)
	})
	var all []*cdc.Event
	events := fl.events()
	for _, ev := range events {
		all = append(all, ev.e)
	}
	checkDelivery(t, all, want)
	for sh, d := range overlaps(events, 300*time.Millisecond) {
		if d > testLease {
			t.Errorf("shard %s was read by two instances at once for %v", sh, d)
		}
	}
	for _, in := range []*instance{a, c} {
		if err := in.run.stop(t); err != nil {
			t.Errorf("%s: %v", in.name, err)
		}
	}
}

// TestLeaseLineageAcrossInstances: a shard splits while two instances
// share the stream; its children are leased only once the parent was read
// to its end, whichever instance read it, and the instances learn the new
// shards from the one that listed them.
func TestLeaseLineageAcrossInstances(t *testing.T) {
	f := newFakeStreams(t)
	f.childFilter = true
	want := map[itemVersion]bool{}
	put := func(shard string, items []int, from, to int) {
		for v := from; v <= to; v++ {
			for _, it := range items {
				f.put(shard, change(it, v))
				want[itemVersion{it, v}] = true
			}
		}
	}
	f.addShard("shardId-A", "")
	f.addShard("shardId-X", "")
	put("shardId-A", []int{0, 1, 2, 3}, 1, 20)
	put("shardId-X", []int{9}, 1, 20)

	fl := newFleet(t, f)
	a := fl.start("a", true, nil)
	b := fl.start("b", true, nil)
	waitSpread(t, 2, 30*time.Second, a, b)
	put("shardId-A", []int{0, 1, 2, 3}, 21, 40)
	f.close("shardId-A")
	f.addShard("shardId-B", "shardId-A")
	f.addShard("shardId-C", "shardId-A")
	put("shardId-B", []int{0, 1}, 41, 60)
	put("shardId-C", []int{2, 3}, 41, 60)
	f.close("shardId-B")
	f.addShard("shardId-D", "shardId-B")
	put("shardId-D", []int{0, 1}, 61, 70)
	waitUntil(t, 60*time.Second, "every change emitted", func() bool {
		got := map[itemVersion]bool{}
		for _, ev := range fl.events() {
			got[versionOf(t, ev.e)] = true
		}
		return len(got) >= len(want)
	})
	waitSpread(t, 3, 30*time.Second, a, b) // X, C and D are left
	events := fl.events()
	var all []*cdc.Event
	firstOf := map[string]time.Time{} // shard -> first emit
	emitted := map[string]time.Time{} // event id -> first emit
	readers := map[string]map[string]bool{}
	for _, ev := range events {
		all = append(all, ev.e)
		sh := ev.e.Info.ShardID
		if _, ok := firstOf[sh]; !ok {
			firstOf[sh] = ev.at
		}
		if _, ok := emitted[ev.e.ID]; !ok {
			emitted[ev.e.ID] = ev.at
		}
		if readers[ev.inst] == nil {
			readers[ev.inst] = map[string]bool{}
		}
		readers[ev.inst][sh] = true
	}
	checkDelivery(t, all, want)
	lastRecord := func(shard string) time.Time {
		recs := f.shard(shard).records
		return emitted[fmt.Sprintf("ev-%s-%s", shard, recs[len(recs)-1].seq)]
	}
	for child, parent := range map[string]string{"shardId-B": "shardId-A", "shardId-C": "shardId-A", "shardId-D": "shardId-B"} {
		if last := lastRecord(parent); last.IsZero() || firstOf[child].Before(last) {
			t.Errorf("shard %s emitted at %v, before its parent %s's last record at %v", child, firstOf[child], parent, last)
		}
	}
	// Both instances held leases (waitSpread above); which of them emitted
	// records depends on timing (b may read X to its current end before a
	// steals it), so only log it.
	t.Logf("shards emitted by a: %v, by b: %v", readers["a"], readers["b"])
	for _, in := range []*instance{a, b} {
		if err := in.run.stop(t); err != nil {
			t.Errorf("%s: %v", in.name, err)
		}
	}
}

// TestLeaseFencedRecordsStop: an instance whose sink cannot deliver is cut
// off; its leases move to another instance. While its records wait, the
// fence gate refuses to send them once the leases ran out, and when the
// instance learns the leases are gone it stops with fence.ErrFenced (only a
// restart clears the sink).
func TestLeaseFencedRecordsStop(t *testing.T) {
	f := newFakeStreams(t)
	for _, id := range []string{"shardId-0", "shardId-1"} {
		f.addShard(id, "")
		for i := range 5 {
			f.put(id, change(i, 1))
		}
	}
	fl := newFleet(t, f)
	gate := fence.New(50 * time.Millisecond)
	x := fl.start("x", false, gate)
	waitSpread(t, 2, 30*time.Second, x)
	waitUntil(t, 10*time.Second, "x's records pending", func() bool {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		return len(fl.pending["x"]) == 10
	})
	if dl, ok := gate.Deadline(); !ok || time.Until(dl) <= 0 {
		t.Fatalf("gate deadline %v (ok %v) while x holds its leases; want ahead", dl, ok)
	}
	x.cut.cut.Store(true)
	cutAt := time.Now()
	y := fl.start("y", true, nil)
	waitSpread(t, 2, 30*time.Second, y)
	// x's leases ran out before y read: sends of x's records are refused.
	dl, ok := gate.Deadline()
	if !ok || !dl.Before(time.Now()) || dl.After(cutAt.Add(testLease)) {
		t.Errorf("gate deadline %v after the cut at %v, want passed, at most a lease duration after it", dl, cutAt)
	}
	x.cut.cut.Store(false)
	err := x.run.wait(t, 30*time.Second)
	if !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("x ended with %v, want fence.ErrFenced", err)
	}
	if err := y.run.stop(t); err != nil {
		t.Errorf("y: %v", err)
	}
}

// TestLeaseLapseDuringEmit: a reader whose lease lapses while it waits for
// the sink to take a record (the sink refuses it when the reader stops)
// reads that record again once the lease is renewed, and the shard's
// checkpoint moves past it, instead of skipping it and holding the
// checkpoint back for good.
func TestLeaseLapseDuringEmit(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-0", "")
	want := map[itemVersion]bool{}
	for i := range 10 {
		f.put("shardId-0", change(i, 1))
		want[itemVersion{i, 1}] = true
	}
	fl := newFleet(t, f)
	n := 0
	fl.stalled = make(chan *cdc.Event, 1)
	fl.stall = func() bool { n++; return n == 4 }
	a := fl.start("a", true, nil)
	var stuck *cdc.Event
	select {
	case stuck = <-fl.stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("no emit stalled")
	}
	// Renewals hang: the lease lapses and the reader stops, its record
	// refused. Restored, the next renewal succeeds (nobody else wants
	// the lease) and the reader goes on.
	a.cut.cut.Store(true)
	waitUntil(t, 10*time.Second, "a's lease lapsed", func() bool {
		st := a.status()
		return st.Leases != nil && st.Leases.Lapsed == 1
	})
	a.cut.cut.Store(false)
	waitUntil(t, 30*time.Second, "the shard's checkpoint at its last record", func() bool {
		st := a.status()
		if len(st.Shards) != 1 {
			return false
		}
		sh := st.Shards[0]
		return sh.LastRead != "" && sh.Checkpoint == sh.LastRead && sh.Pending == 0 && len(fl.events()) >= 10
	})
	got := map[itemVersion]bool{}
	for _, ev := range fl.events() {
		got[versionOf(t, ev.e)] = true
	}
	for iv := range want {
		if !got[iv] {
			t.Errorf("item %d version %d never emitted (the stalled record was %s)", iv.item, iv.version, stuck.ID)
		}
	}
	if err := a.run.stop(t); err != nil {
		t.Fatalf("a: %v", err)
	}
	if got := testutil.ToFloat64(a.src.m.leasesReleased); got != 1 {
		t.Errorf("a released %v leases on shutdown, want 1", got)
	}
}
