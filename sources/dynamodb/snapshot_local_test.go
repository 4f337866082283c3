package dynamodb

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint/file"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// loadOp is one write of a test workload: a put (v = g) or a delete, with
// g the write's place in the test's global order.
type loadOp struct {
	g      int64
	delete bool
}

// loadWorkload writes to a table while a load reads it: updates of
// existing items, deletes, new items. Each key is written by one goroutine,
// so its writes happen in the order logged.
type loadWorkload struct {
	db    *dynamodb.Client
	table string
	pad   string

	mu   sync.Mutex
	g    int64
	ops  map[string][]loadOp // by item name
	last map[string]bool     // exists after its last write
}

func (w *loadWorkload) put(ctx context.Context, name string) error {
	w.mu.Lock()
	w.g++
	g := w.g
	w.mu.Unlock()
	item := itemKey(name, 1)
	item["v"] = N(strconv.FormatInt(g, 10))
	item["pad"] = S(w.pad)
	if _, err := w.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(w.table), Item: item}); err != nil {
		return err
	}
	w.mu.Lock()
	w.ops[name] = append(w.ops[name], loadOp{g: g})
	w.last[name] = true
	w.mu.Unlock()
	return nil
}

func (w *loadWorkload) del(ctx context.Context, name string) error {
	w.mu.Lock()
	w.g++
	g := w.g
	w.mu.Unlock()
	if _, err := w.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(w.table), Key: itemKey(name, 1)}); err != nil {
		return err
	}
	w.mu.Lock()
	w.ops[name] = append(w.ops[name], loadOp{g: g, delete: true})
	w.last[name] = false
	w.mu.Unlock()
	return nil
}

// populate writes n items item-0..item-(n-1) with v=0 before the bridge
// starts.
func (w *loadWorkload) populate(t testing.TB, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i += 25 {
		var reqs []ddbtypes.WriteRequest
		for j := i; j < min(i+25, n); j++ {
			item := itemKey(fmt.Sprintf("item-%d", j), 1)
			item["v"] = N("0")
			item["pad"] = S(w.pad)
			reqs = append(reqs, ddbtypes.WriteRequest{PutRequest: &ddbtypes.PutRequest{Item: item}})
			w.last[fmt.Sprintf("item-%d", j)] = true
		}
		for len(reqs) > 0 {
			out, err := w.db.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]ddbtypes.WriteRequest{w.table: reqs}})
			if err != nil {
				t.Fatal(err)
			}
			reqs = out.UnprocessedItems[w.table]
		}
	}
}

// run writes until ctx ends: workers goroutines, each owning the keys
// with its remainder, updating and deleting existing items and adding new
// ones.
func (w *loadWorkload) run(ctx context.Context, existing, workers int, perSecond float64) error {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for me := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(me), 7))
			tick := time.NewTicker(time.Duration(float64(time.Second) * float64(workers) / perSecond))
			defer tick.Stop()
			fresh := 0
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				var name string
				switch p := rng.Float64(); {
				case p < 0.2:
					name = fmt.Sprintf("new-%d-%d", me, fresh)
					fresh++
				default:
					i := rng.IntN(existing/workers)*workers + me
					name = fmt.Sprintf("item-%d", i)
				}
				w.mu.Lock()
				exists := w.last[name]
				w.mu.Unlock()
				// Not cancelled with ctx: a write whose outcome is unknown
				// would be missing from the log.
				var err error
				if exists && rng.Float64() < 0.3 {
					err = w.del(context.Background(), name)
				} else {
					err = w.put(context.Background(), name)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// checkLoad holds the events a test collected, in emit order, against the
// workload's log: every stream change came, no read follows a newer
// change of its key nor is followed by an older one, a key is read at
// most maxReads times, every item that existed and was not written is
// read, and the events applied in order leave the table's state.
func checkLoad(t *testing.T, events []*cdc.Event, w *loadWorkload, final map[string]int64, existing, maxReads int) (reads int) {
	t.Helper()
	name := func(e *cdc.Event) string {
		var k struct{ Pk string }
		if err := json.Unmarshal(e.Key, &k); err != nil {
			t.Fatalf("key %s: %v", e.Key, err)
		}
		return k.Pk
	}
	version := func(img json.RawMessage) int64 {
		var v struct{ V int64 }
		if err := json.Unmarshal(img, &v); err != nil {
			t.Fatalf("image %s: %v", img, err)
		}
		return v.V
	}
	type keyState struct {
		streamed  int   // stream changes of the key seen (first occurrences)
		newest    int64 // g of the newest change delivered
		readV     int64 // version of the last read delivered (-1 none)
		reads     int
		seenIDs   map[string]bool
		replica   int64
		replicaOK bool
	}
	keys := map[string]*keyState{}
	get := func(n string) *keyState {
		ks := keys[n]
		if ks == nil {
			ks = &keyState{readV: -1, seenIDs: map[string]bool{}}
			keys[n] = ks
		}
		return ks
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	violations := 0
	for _, e := range events {
		n := name(e)
		ks := get(n)
		if e.Op == cdc.OpRead {
			reads++
			ks.reads++
			v := version(e.After)
			if v < ks.newest {
				violations++
				if violations < 5 {
					t.Errorf("%s: read of version %d after a change of version %d", n, v, ks.newest)
				}
			}
			ks.readV = v
			ks.replica, ks.replicaOK = v, true
			continue
		}
		if ks.seenIDs[e.ID] {
			continue // a duplicate (after a restart)
		}
		ks.seenIDs[e.ID] = true
		ops := w.ops[n]
		if ks.streamed >= len(ops) {
			t.Fatalf("%s: stream change %s %s beyond the %d writes made", n, e.ID, e.Op, len(ops))
		}
		op := ops[ks.streamed]
		ks.streamed++
		if op.delete != (e.Op == cdc.OpDelete) {
			t.Fatalf("%s: stream change %d is %s, the write was delete=%v", n, ks.streamed, e.Op, op.delete)
		}
		if op.g < ks.readV {
			violations++
			if violations < 5 {
				t.Errorf("%s: change of version %d after a read of version %d", n, op.g, ks.readV)
			}
		}
		ks.newest = max(ks.newest, op.g)
		if op.delete {
			ks.replicaOK = false
		} else {
			ks.replica, ks.replicaOK = version(e.After), true
		}
	}
	if violations > 0 {
		t.Errorf("%d order violations", violations)
	}
	for n, ops := range w.ops {
		if ks := get(n); ks.streamed != len(ops) {
			t.Errorf("%s: %d of %d stream changes delivered", n, ks.streamed, len(ops))
		}
	}
	for i := range existing {
		n := fmt.Sprintf("item-%d", i)
		ks := get(n)
		if len(w.ops[n]) == 0 && ks.reads == 0 {
			t.Errorf("%s existed, was never written, and was not read", n)
		}
		if ks.reads > maxReads {
			t.Errorf("%s read %d times, want at most %d", n, ks.reads, maxReads)
		}
	}
	replica := map[string]int64{}
	for n, ks := range keys {
		if ks.replicaOK {
			replica[n] = ks.replica
		}
	}
	diff := 0
	for n, v := range final {
		if rv, ok := replica[n]; !ok || rv != v {
			diff++
			if diff < 5 {
				t.Errorf("replica: %s has version %d (present %v), the table %d", n, rv, ok, v)
			}
		}
	}
	for n, v := range replica {
		if _, ok := final[n]; !ok {
			diff++
			if diff < 5 {
				t.Errorf("replica: %s (version %d) is not in the table", n, v)
			}
		}
	}
	if diff > 0 {
		t.Errorf("replica differs from the table in %d items", diff)
	}
	return reads
}

// tableVersions scans the table: item name -> v.
func tableVersions(t testing.TB, db *dynamodb.Client, table string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	p := dynamodb.NewScanPaginator(db, &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			v, _ := strconv.ParseInt(it["v"].(*ddbtypes.AttributeValueMemberN).Value, 10, 64)
			out[it["pk"].(*ddbtypes.AttributeValueMemberS).Value] = v
		}
	}
	return out
}

func loadStatus(s *Source) (SnapshotInfo, bool) {
	st := s.Status().(Status)
	if len(st.Snapshots) == 0 {
		return SnapshotInfo{}, false
	}
	return st.Snapshots[len(st.Snapshots)-1], true
}

// TestLocalSnapshotWhileWriting: the initial load of a table with items,
// while the table is written (updates, deletes, new items) and the stream
// is read. Every stream change arrives, every untouched item is read once,
// no read comes after a newer change of its key (nor before an older
// one), and the events applied in order equal the table.
func TestLocalSnapshotWhileWriting(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	db := d.Client()
	table := createTable(t, db, "load", ddbtypes.StreamViewTypeNewAndOldImages)
	const existing = 2000
	w := &loadWorkload{db: db, table: table, pad: strings.Repeat("x", 2000), ops: map[string][]loadOp{}, last: map[string]bool{}}
	w.populate(t, existing)

	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	col := newCollector(ackAsync)
	s, _ := newSource(t, Config{Table: table, Start: StartLatest, Snapshot: SnapshotInitial, SnapshotSegments: 4, SnapshotMaxRCU: 400, SnapshotMargin: time.Second}, db, d.StreamsClient(), store)
	r := start(t, s, col.emit)
	// Writes before the stream's LATEST position is taken are not changes
	// the bridge promises.
	waitUntil(t, time.Minute, "the stream's position", s.streamOpened)

	ctx, cancel := context.WithCancel(context.Background())
	werr := make(chan error, 1)
	go func() { werr <- w.run(ctx, existing, 4, 150) }()
	waitUntil(t, 2*time.Minute, "the load to finish", func() bool {
		st, ok := loadStatus(s)
		return ok && st.State == loadDone
	})
	cancel()
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	writes := 0
	for _, ops := range w.ops {
		writes += len(ops)
	}
	w.mu.Unlock()
	final := tableVersions(t, db, table)
	streamed := func() int {
		ids := map[string]bool{}
		for _, e := range col.snapshot() {
			if e.Op != cdc.OpRead {
				ids[e.ID] = true
			}
		}
		return len(ids)
	}
	deadline := time.Now().Add(time.Minute)
	for streamed() < writes && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := streamed(); n < writes {
		t.Errorf("%d stream changes of %d writes", n, writes)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	st, _ := loadStatus(s)
	reads := checkLoad(t, col.snapshot(), w, final, existing, 1)
	t.Logf("%d writes during the load; %d items read, %d dropped for the stream; %d pages; %.0f RCU consumed", writes, reads, st.Dropped, pages(st), st.ConsumedRCU)
	if writes < 200 {
		t.Errorf("only %d writes during the load: the test did not overlap them", writes)
	}
	if st.Dropped == 0 {
		t.Errorf("no item was dropped for the stream: the writes did not meet the load")
	}
	if got := testutil.ToFloat64(s.m.snapItems); int(got) != reads {
		t.Errorf("cdcbridge_dynamodb_snapshot_items_total = %v, want %d", got, reads)
	}
	if len(st.Segments) != 4 {
		t.Errorf("%d segments, want 4", len(st.Segments))
	}
	for _, sg := range st.Segments {
		if !sg.Done || sg.Pages < 2 {
			t.Errorf("segment %d: done %v after %d pages; want done after several", sg.Segment, sg.Done, sg.Pages)
		}
	}
}

func pages(st SnapshotInfo) int64 {
	var n int64
	for _, sg := range st.Segments {
		n += sg.Pages
	}
	return n
}

// TestLocalSnapshotResume: a load stopped as by a crash (the sink stops
// accepting, then the process ends) resumes each segment after its last
// delivered page: every item is read, and what the second run reads again
// is at most the page in flight of each segment.
func TestLocalSnapshotResume(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	db := d.Client()
	table := createTable(t, db, "resume", ddbtypes.StreamViewTypeNewAndOldImages)
	const existing, segments, rate = 3000, 3, 300.0
	w := &loadWorkload{db: db, table: table, pad: strings.Repeat("x", 2000), ops: map[string][]loadOp{}, last: map[string]bool{}}
	w.populate(t, existing)
	path := filepath.Join(t.TempDir(), "c.json")
	cfg := Config{Table: table, Start: StartLatest, Snapshot: SnapshotInitial, SnapshotSegments: segments, SnapshotMaxRCU: rate, SnapshotMargin: 200 * time.Millisecond}

	store := openFileStore(t, path)
	col1 := newCollector(ackNever)
	var n atomic.Int64
	col1.before = func(e *cdc.Event) error {
		if n.Add(1) <= 1000 {
			go e.Ack()
		}
		return nil
	}
	s1, _ := newSource(t, cfg, db, d.StreamsClient(), store)
	r := start(t, s1, col1.emit)
	col1.waitFor(t, 1200, time.Minute, r)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	st1, _ := loadStatus(s1)
	_ = store.Close()

	store = openFileStore(t, path)
	col2 := newCollector(ackAsync)
	s2, _ := newSource(t, cfg, db, d.StreamsClient(), store)
	r = start(t, s2, col2.emit)
	waitUntil(t, time.Minute, "the resumed load to finish", func() bool {
		st, ok := loadStatus(s2)
		return ok && st.State == loadDone
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	st2, _ := loadStatus(s2)
	// The second run reads the stream from its horizon too (a first start
	// at LATEST that saw no record yet): the items written just before may
	// come as inserts, and their reads are then dropped.
	first := map[string]bool{}
	for _, e := range col1.snapshot() {
		first[e.ID] = true
	}
	again, reads2, covered := 0, 0, map[string]bool{}
	for _, e := range append(col1.snapshot(), col2.snapshot()...) {
		covered[string(e.Key)] = true
	}
	for _, e := range col2.snapshot() {
		if e.Op != cdc.OpRead {
			continue
		}
		reads2++
		if first[e.ID] {
			again++
		}
	}
	// A page costs about a second of the budget shared by the segments:
	// rate/segments RCU, 2 KB items at two per unit.
	pageItems := int(rate / segments * 2)
	t.Logf("first run: %d read events (%d items accepted); second run: %d read, %d of them read again (bound %d: one page per segment), %d dropped for the stream",
		len(col1.snapshot()), st1.Items, reads2, again, segments*pageItems, st2.Dropped)
	if len(covered) != existing {
		t.Errorf("%d items read or streamed over both runs, want %d", len(covered), existing)
	}
	if again > segments*pageItems {
		t.Errorf("%d items read again, more than one page (%d items) per segment", again, pageItems)
	}
	if st2.Items+st2.Dropped != int64(existing) {
		t.Errorf("the load's status counts %d items delivered and %d dropped, want %d in all", st2.Items, st2.Dropped, existing)
	}
	if st1.Items == 0 {
		t.Errorf("the first run saved no progress")
	}
}

// TestLocalSnapshotRequest: loads asked for through the request
// directory run while the bridge streams, --status reads them from the
// checkpoint file opened read-only, a cancelled one stops, and a request
// for another table is refused.
func TestLocalSnapshotRequest(t *testing.T) {
	t.Parallel()
	d := testenv.DynamoDB(t)
	db := d.Client()
	table := createTable(t, db, "request", ddbtypes.StreamViewTypeNewAndOldImages)
	const existing = 500
	w := &loadWorkload{db: db, table: table, pad: "p", ops: map[string][]loadOp{}, last: map[string]bool{}}
	w.populate(t, existing)
	path := filepath.Join(t.TempDir(), "c.json")
	dir := path + ".requests"
	store := openFileStore(t, path)
	col := newCollector(ackAsync)
	// A budget of 4 RCU/s makes a load of the table (about 20 pages of at
	// least one unit each) take seconds.
	s, _ := newSource(t, Config{Table: table, Start: StartLatest, RequestDir: dir, RequestPoll: 50 * time.Millisecond,
		SnapshotMargin: 200 * time.Millisecond, SnapshotMaxRCU: 4}, db, d.StreamsClient(), store)
	r := start(t, s, col.emit)
	waitUntil(t, time.Minute, "the stream's position", s.streamOpened)
	time.Sleep(300 * time.Millisecond)
	if got := len(col.snapshot()); got != 0 {
		t.Fatalf("%d events before any request (CDCBRIDGE_DYNAMODB_SNAPSHOT=never)", got)
	}
	req, err := RequestSnapshot(dir, table)
	if err != nil {
		t.Fatal(err)
	}
	other, err := RequestSnapshot(dir, "another")
	if err != nil {
		t.Fatal(err)
	}
	byID := func(id string) (SnapshotInfo, bool) {
		for _, in := range s.Status().(Status).Snapshots {
			if in.ID == id {
				return in, true
			}
		}
		return SnapshotInfo{}, false
	}
	waitUntil(t, time.Minute, "the requested load", func() bool { in, ok := byID(req.ID); return ok && in.State == loadDone })
	if in, _ := byID(other.ID); in.State != loadFailed || !strings.Contains(in.Note, "not another") {
		t.Errorf("request for another table: %+v, want failed naming it", in)
	}
	checkItems(t, col.snapshot(), existing)
	if left, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(left) != 0 {
		t.Errorf("requests left after they were taken: %v", left)
	}

	// A second load, cancelled as it starts.
	req2, err := RequestSnapshot(dir, table)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CancelSnapshot(dir, req2.ID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "the cancelled load", func() bool { in, ok := byID(req2.ID); return ok && in.State == loadCancelled })

	// A third, cancelled while it reads.
	req3, err := RequestSnapshot(dir, table)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "the third load's first page", func() bool { in, ok := byID(req3.ID); return ok && in.Items > 0 })
	if _, err := CancelSnapshot(dir, req3.ID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "the load cancelled while reading", func() bool {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("Run ended: %v", err)
		default:
		}
		in, ok := byID(req3.ID)
		return ok && in.State == loadCancelled
	})
	if in, _ := byID(req3.ID); in.Items >= existing {
		t.Errorf("the load cancelled while reading delivered all %d items", in.Items)
	}

	// --status reads the file the bridge saves (at once after a change of
	// a job's state).
	want := map[string]string{req.ID: loadDone, other.ID: loadFailed, req2.ID: loadCancelled, req3.ID: loadCancelled}
	var states map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		ro, err := file.OpenReadOnly(path)
		if err != nil {
			t.Fatal(err)
		}
		infos, err := Snapshots(context.Background(), ro, dir, table)
		if err != nil {
			t.Fatal(err)
		}
		states = map[string]string{}
		for _, in := range infos {
			states[in.ID] = in.State
		}
		if cmp.Equal(want, states) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if diff := cmp.Diff(want, states); diff != "" {
		t.Errorf("Snapshots from the file opened read-only (-want +got):\n%s", diff)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}
