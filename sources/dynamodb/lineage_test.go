package dynamodb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
)

func keyOf(item int) map[string]any {
	return map[string]any{"pk": map[string]any{"S": fmt.Sprintf("item-%d", item)}, "sk": map[string]any{"N": "1"}}
}

func imageOf(item, version int) map[string]any {
	m := keyOf(item)
	m["v"] = map[string]any{"N": strconv.Itoa(version)}
	return m
}

// change is version v of item: an INSERT for version 1, else a MODIFY.
func change(item, v int) fakeChange {
	c := fakeChange{event: "MODIFY", keys: keyOf(item), newImage: imageOf(item, v)}
	if v == 1 {
		c.event = "INSERT"
	} else {
		c.oldImage = imageOf(item, v-1)
	}
	return c
}

type itemVersion struct{ item, version int }

func versionOf(t testing.TB, e *cdc.Event) itemVersion {
	t.Helper()
	var img struct {
		PK string      `json:"pk"`
		V  json.Number `json:"v"`
	}
	src := e.After
	if src == nil {
		src = e.Before
	}
	if err := json.Unmarshal(src, &img); err != nil {
		t.Fatalf("event %s: image %s: %v", e.ID, src, err)
	}
	item, err1 := strconv.Atoi(strings.TrimPrefix(img.PK, "item-"))
	v, err2 := strconv.Atoi(img.V.String())
	if err1 != nil || err2 != nil {
		t.Fatalf("event %s: image %s", e.ID, src)
	}
	return itemVersion{item, v}
}

// checkDelivery asserts that every wanted change arrived and that, keeping
// the first occurrence of each id, every item's versions arrived in order.
func checkDelivery(t testing.TB, events []*cdc.Event, want map[itemVersion]bool) {
	t.Helper()
	seen := map[string]bool{}
	last := map[int]int{}
	got := map[itemVersion]bool{}
	for _, e := range events {
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		iv := versionOf(t, e)
		if iv.version <= last[iv.item] {
			t.Errorf("item %d: version %d after version %d (event %s, shard %s)", iv.item, iv.version, last[iv.item], e.ID, e.Info.ShardID)
		}
		last[iv.item] = iv.version
		got[iv] = true
	}
	missing := 0
	for iv := range want {
		if !got[iv] {
			if missing < 10 {
				t.Errorf("missing item %d version %d", iv.item, iv.version)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d changes missing of %d", missing, len(want))
	}
	for iv := range got {
		if !want[iv] {
			t.Errorf("unexpected item %d version %d", iv.item, iv.version)
		}
	}
}

// guardParents fails an emit of a child shard's event while its parent's
// finish checkpoint is not in the store.
func guardParents(t testing.TB, store checkpoint.Store, arn string, parents map[string]string) func(*cdc.Event) error {
	var mu sync.Mutex
	ok := map[string]bool{}
	return func(e *cdc.Event) error {
		mu.Lock()
		defer mu.Unlock()
		sid := e.Info.ShardID
		p := parents[sid]
		if p == "" || ok[sid] {
			return nil
		}
		c, err := store.Load(context.Background(), shardKey(arn, p))
		if err != nil || c.Position != FinishedPosition {
			t.Errorf("shard %s emitted %s before its parent %s was finished and checkpointed (parent checkpoint %+v, %v)", sid, e.ID, p, c, err)
			return nil
		}
		ok[sid] = true
		return nil
	}
}

// TestLineage reads a tree of shards listed children first and over
// several pages: every change arrives once, in order per item, and no child
// emits before its parent's end is checkpointed.
func TestLineage(t *testing.T) {
	f := newFakeStreams(t)
	f.describePage = 2
	want := map[itemVersion]bool{}
	put := func(shard string, items []int, from, to int) {
		for v := from; v <= to; v++ {
			for _, it := range items {
				f.put(shard, change(it, v))
				want[itemVersion{it, v}] = true
			}
		}
	}
	// Listed children first: order of the listing must not matter.
	f.addShard("shardId-D", "shardId-B")
	f.addShard("shardId-C", "shardId-A")
	f.addShard("shardId-B", "shardId-A")
	f.addShard("shardId-A", "")
	f.addShard("shardId-E", "shardId-aged-out") // parent left the stream unread
	put("shardId-A", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 1, 30)
	f.close("shardId-A")
	put("shardId-B", []int{0, 1, 2, 3, 4}, 31, 50)
	f.close("shardId-B")
	put("shardId-C", []int{5, 6, 7, 8, 9}, 31, 50)
	put("shardId-D", []int{0, 1, 2, 3, 4}, 51, 60)
	put("shardId-E", []int{10, 11}, 1, 20)

	store := openFileStore(t, filepath.Join(t.TempDir(), "ckpt.json"))
	col := newCollector(ackAsync)
	col.before = guardParents(t, store, f.arn, map[string]string{
		"shardId-B": "shardId-A", "shardId-C": "shardId-A", "shardId-D": "shardId-B",
	})
	s, reg := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), store)
	r := start(t, s, col.emit)
	col.waitFor(t, len(want), 20*time.Second, r)
	col.wg.Wait() // every ack in: the final checkpoints cover everything
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	events := col.snapshot()
	if len(events) != len(want) {
		t.Errorf("%d events, want %d (no duplicates without a restart)", len(events), len(want))
	}
	checkDelivery(t, events, want)

	f.mu.Lock()
	for id, n := range f.maxReaders {
		if n > 1 {
			t.Errorf("shard %s had %d concurrent readers", id, n)
		}
	}
	f.mu.Unlock()

	// Checkpoints: finished shards at SHARD_END, open ones at their last record.
	ctx := context.Background()
	for id, wantPos := range map[string]string{
		"shardId-A": FinishedPosition, "shardId-B": FinishedPosition,
		"shardId-C": pad(f.shard("shardId-C").records[len(f.shard("shardId-C").records)-1].seq),
		"shardId-D": pad(f.shard("shardId-D").records[len(f.shard("shardId-D").records)-1].seq),
		"shardId-E": pad(f.shard("shardId-E").records[len(f.shard("shardId-E").records)-1].seq),
	} {
		c, err := store.Load(ctx, shardKey(f.arn, id))
		if err != nil || c.Position != wantPos {
			t.Errorf("checkpoint of %s = %+v, %v; want position %s", id, c, err, wantPos)
		}
	}
	if got := testutil.ToFloat64(s.m.shards.WithLabelValues("finished")); got != 2 {
		t.Errorf("shards{state=finished} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.m.shards.WithLabelValues("reading")); got != 3 {
		t.Errorf("shards{state=reading} = %v, want 3", got)
	}
	// insert, update, delete, and read (loads).
	if n, err := testutil.GatherAndCount(reg, "cdcbridge_events_received_total"); err != nil || n != 4 {
		t.Errorf("cdcbridge_events_received_total series: %d, %v", n, err)
	}
}

func pad(seq string) string {
	p, err := cdc.PadSequence(seq)
	if err != nil {
		panic(err)
	}
	return p
}

// TestSplitWhileReading closes a shard while it is read and adds its
// children: the source finds them and reads them after the parent, with
// the child-shard filter and without it.
func TestSplitWhileReading(t *testing.T) {
	for _, filter := range []bool{true, false} {
		t.Run(fmt.Sprintf("childFilter=%v", filter), func(t *testing.T) {
			f := newFakeStreams(t)
			f.childFilter = filter
			want := map[itemVersion]bool{}
			f.addShard("shardId-P", "")
			for v := 1; v <= 20; v++ {
				for it := range 4 {
					f.put("shardId-P", change(it, v))
					want[itemVersion{it, v}] = true
				}
			}
			store := openFileStore(t, filepath.Join(t.TempDir(), "ckpt.json"))
			col := newCollector(ackAsync)
			col.before = guardParents(t, store, f.arn, map[string]string{"shardId-K1": "shardId-P", "shardId-K2": "shardId-P"})
			// A long discovery interval: only the parent's end can find
			// the children quickly.
			s, _ := newSource(t, Config{StreamARN: f.arn, DiscoverInterval: time.Hour}, nil, f.client(), store)
			r := start(t, s, col.emit)
			col.waitFor(t, len(want), 10*time.Second, r)

			// The split: last records of the parent, then two children
			// taking items 0-1 and 2-3.
			for it := range 4 {
				f.put("shardId-P", change(it, 21))
				want[itemVersion{it, 21}] = true
			}
			f.addShard("shardId-K1", "shardId-P")
			f.addShard("shardId-K2", "shardId-P")
			for v := 22; v <= 30; v++ {
				for it := range 4 {
					f.put(map[bool]string{true: "shardId-K1", false: "shardId-K2"}[it < 2], change(it, v))
					want[itemVersion{it, v}] = true
				}
			}
			f.close("shardId-P")
			col.waitFor(t, len(want), 10*time.Second, r)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			checkDelivery(t, col.snapshot(), want)
			if filter && f.callCount("DescribeStream") > 3 {
				t.Errorf("%d DescribeStream calls; the child filter should have found the children in one", f.callCount("DescribeStream"))
			}
		})
	}
}

// TestParentTrimmedUnread: a parent that left the stream with a checkpoint
// short of its end lost records. fail stops; skip counts it, records the
// parent as finished and reads the child.
func TestParentTrimmedUnread(t *testing.T) {
	for _, policy := range []string{OnTrimmedFail, OnTrimmedSkip} {
		t.Run(policy, func(t *testing.T) {
			f := newFakeStreams(t)
			f.addShard("shardId-child", "shardId-gone")
			f.put("shardId-child", change(1, 5))
			store := openFileStore(t, filepath.Join(t.TempDir(), "ckpt.json"))
			ctx := context.Background()
			if err := store.Save(ctx, streamScope(f.arn), checkpoint.Checkpoint{Position: markerPosition}); err != nil {
				t.Fatal(err)
			}
			if err := store.Save(ctx, shardKey(f.arn, "shardId-gone"), checkpoint.Checkpoint{Position: pad("400000000000000000010")}); err != nil {
				t.Fatal(err)
			}
			col := newCollector(ackNow)
			s, _ := newSource(t, Config{StreamARN: f.arn, OnTrimmed: policy}, nil, f.client(), store)
			r := start(t, s, col.emit)
			if policy == OnTrimmedFail {
				err := r.wait(t, 10*time.Second)
				if !errors.Is(err, ErrTrimmed) || !strings.Contains(err.Error(), "CDCBRIDGE_DYNAMODB_ON_TRIMMED=skip") {
					t.Fatalf("Run: %v, want ErrTrimmed naming the setting", err)
				}
				if col.len() != 0 {
					t.Errorf("%d events emitted from the child of a trimmed parent under fail", col.len())
				}
			} else {
				col.waitFor(t, 1, 10*time.Second, r)
				if err := r.stop(t); err != nil {
					t.Fatal(err)
				}
				c, err := store.Load(ctx, shardKey(f.arn, "shardId-gone"))
				if err != nil || c.Position != FinishedPosition || !strings.Contains(string(c.Data), `"trimmed":true`) {
					t.Errorf("parent checkpoint %+v, %v; want SHARD_END marked trimmed", c, err)
				}
			}
			if got := testutil.ToFloat64(s.m.trimmed); got != 1 {
				t.Errorf("cdcbridge_dynamodb_trimmed_total = %v, want 1", got)
			}
		})
	}
}
