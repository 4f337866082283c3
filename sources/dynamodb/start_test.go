package dynamodb

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// TestStartLatest: a first start at latest reads only changes made after
// it; a restart before the open shard had a record neither replays old
// records nor skips new ones; closed shards are recorded as skipped.
func TestStartLatest(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-old", "")
	f.addShard("shardId-new", "shardId-old")
	old := time.Now().Add(-10 * time.Minute)
	for v := 1; v <= 5; v++ {
		c := change(1, v)
		c.created = old
		f.put("shardId-old", c)
	}
	f.close("shardId-old")
	for v := 6; v <= 8; v++ {
		c := change(1, v)
		c.created = old
		f.put("shardId-new", c)
	}
	path := filepath.Join(t.TempDir(), "c.json")
	store := openFileStore(t, path)
	col := newCollector(ackNow)
	s, _ := newSource(t, Config{StreamARN: f.arn, Start: StartLatest}, nil, f.client(), store)
	r := start(t, s, col.emit)
	waitUntil(t, 5*time.Second, "ready", s.Ready)
	time.Sleep(100 * time.Millisecond) // several idle polls
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if col.len() != 0 {
		t.Fatalf("%d events of changes made before a latest start", col.len())
	}
	ctx := context.Background()
	c, err := store.Load(ctx, shardKey(f.arn, "shardId-old"))
	if err != nil || c.Position != FinishedPosition || !strings.Contains(string(c.Data), `"skipped":true`) {
		t.Errorf("closed shard's checkpoint %+v, %v; want SHARD_END marked skipped", c, err)
	}
	c, err = store.Load(ctx, shardKey(f.arn, "shardId-new"))
	if err != nil || c.Position != "" || !strings.Contains(string(c.Data), `"latest_at"`) {
		t.Errorf("open shard's checkpoint %+v, %v; want an empty position with latest_at", c, err)
	}

	// A change made while the bridge is down, then a restart: it must
	// arrive, the old ones must not.
	f.put("shardId-new", change(1, 9))
	col2 := newCollector(ackNow)
	s2, _ := newSource(t, Config{StreamARN: f.arn, Start: StartLatest}, nil, f.client(), store)
	r = start(t, s2, col2.emit)
	col2.waitFor(t, 1, 10*time.Second, r)
	f.put("shardId-new", change(1, 10))
	col2.waitFor(t, 2, 10*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, e := range col2.snapshot() {
		got = append(got, versionOf(t, e).version)
	}
	if diff := cmp.Diff([]int{9, 10}, got); diff != "" {
		t.Errorf("versions after the restart (-want +got):\n%s", diff)
	}
}

// TestResumeFromCheckpoint: everything acknowledged before a stop is not
// read again; what came while stopped is.
func TestResumeFromCheckpoint(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	want := map[itemVersion]bool{}
	putVersions(f, "shardId-1", []int{1, 2, 3}, 1, 10, want)
	path := filepath.Join(t.TempDir(), "c.json")
	store := openFileStore(t, path)
	col := newCollector(ackAsync)
	s, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), store)
	r := start(t, s, col.emit)
	col.waitFor(t, 30, 10*time.Second, r)
	col.wg.Wait() // every ack delivered before the stop
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	c, err := store.Load(context.Background(), shardKey(f.arn, "shardId-1"))
	last := f.shard("shardId-1").records[29].seq
	if err != nil || c.Position != pad(last) {
		t.Fatalf("checkpoint %+v, %v; want the last record %s (saved on exit)", c, err, pad(last))
	}
	_ = store.Close()

	putVersions(f, "shardId-1", []int{1, 2, 3}, 11, 12, want)
	store = openFileStore(t, path)
	col2 := newCollector(ackNow)
	s2, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), store)
	r = start(t, s2, col2.emit)
	col2.waitFor(t, 6, 10*time.Second, r)
	time.Sleep(100 * time.Millisecond)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if n := col2.len(); n != 6 {
		t.Errorf("%d events after the restart, want the 6 new ones", n)
	}
	checkDelivery(t, append(col.snapshot(), col2.snapshot()...), want)
}

// TestCheckpointNeverAheadOfAcks: with acks held back, the checkpoint stays
// before the oldest unacknowledged record, whatever was read after it.
func TestCheckpointNeverAheadOfAcks(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	putVersions(f, "shardId-1", []int{1}, 1, 10, nil)
	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	col := newCollector(ackNever)
	s, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), store)
	r := start(t, s, col.emit)
	col.waitFor(t, 10, 10*time.Second, r)
	events := col.snapshot()
	// Ack all but the 4th.
	for i, e := range events {
		if i != 3 {
			e.Ack()
		}
	}
	ctx := context.Background()
	waitUntil(t, 5*time.Second, "the checkpoint at the last record before the unacknowledged one", func() bool {
		c, err := store.Load(ctx, shardKey(f.arn, "shardId-1"))
		return err == nil && c.Position == events[2].Sequence
	})
	time.Sleep(200 * time.Millisecond) // several save rounds: it stays there
	c, err := store.Load(ctx, shardKey(f.arn, "shardId-1"))
	if err != nil || c.Position != events[2].Sequence {
		t.Fatalf("checkpoint %+v, %v; want %s, the last record before the unacknowledged one", c, err, events[2].Sequence)
	}
	if tm, ok := s.OldestUnacked(); !ok || !tm.Equal(events[3].Time) {
		t.Errorf("OldestUnacked = %v, %v; want %v", tm, ok, events[3].Time)
	}
	st := s.Status().(Status)
	if st.Pending != 1 || len(st.Shards) != 1 || st.Shards[0].Checkpoint != events[2].Sequence {
		b, _ := json.Marshal(st)
		t.Errorf("status %s", b)
	}
	events[3].Ack()
	waitUntil(t, 5*time.Second, "checkpoint at the last record", func() bool {
		c, err := store.Load(ctx, shardKey(f.arn, "shardId-1"))
		return err == nil && c.Position == events[9].Sequence
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestStaleCheckpointStops: another writer moved the checkpoint ahead (a
// second instance on the same store): the source stops instead of
// fighting over it.
func TestStaleCheckpointStops(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	putVersions(f, "shardId-1", []int{1}, 1, 3, nil)
	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	col := newCollector(ackNever)
	s, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), store)
	r := start(t, s, col.emit)
	col.waitFor(t, 3, 10*time.Second, r)
	if err := store.Save(context.Background(), shardKey(f.arn, "shardId-1"), checkpoint.Checkpoint{Position: pad("999999999999999999999")}); err != nil {
		t.Fatal(err)
	}
	for _, e := range col.snapshot() {
		e.Ack()
	}
	err := r.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "another writer") {
		t.Fatalf("Run: %v, want a stale checkpoint error", err)
	}
}

// TestPruneOldShards: checkpoints of shards that left the stream and
// finished more than a day ago are deleted; recent or unfinished ones and
// the stream's marker stay.
func TestPruneOldShards(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	ctx := context.Background()
	save := func(id, pos string, d ckptData) {
		t.Helper()
		if err := store.Save(ctx, shardKey(f.arn, id), checkpoint.Checkpoint{Position: pos, Data: d.encode()}); err != nil {
			t.Fatal(err)
		}
	}
	save("shardId-ancient", FinishedPosition, ckptData{FinishedAt: time.Now().Add(-48 * time.Hour)})
	save("shardId-recent", FinishedPosition, ckptData{FinishedAt: time.Now().Add(-time.Hour)})
	save("shardId-partial", pad("400000000000000000010"), ckptData{})
	col := newCollector(ackNow)
	s, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), store)
	r := start(t, s, col.emit)
	waitUntil(t, 5*time.Second, "ready", s.Ready)
	waitUntil(t, 5*time.Second, "the old checkpoint deleted", func() bool {
		_, err := store.Load(ctx, shardKey(f.arn, "shardId-ancient"))
		return errors.Is(err, checkpoint.ErrNotFound)
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	keys, err := store.Keys(ctx, streamScope(f.arn))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{shardKey(f.arn, "shardId-partial"), shardKey(f.arn, "shardId-recent")}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if _, err := store.Load(ctx, streamScope(f.arn)); err != nil {
		t.Errorf("stream marker: %v", err)
	}
}

// TestIteratorAgeAndHeartbeat: the iterator age is how old the newest
// record read is while the reader is behind, 0 once a read finds nothing
// new; the heartbeat keeps beating while the source waits.
func TestIteratorAgeAndHeartbeat(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	for v := 1; v <= 3; v++ {
		c := change(1, v)
		c.created = time.Now().Add(-time.Hour)
		f.put("shardId-1", c)
	}
	release := make(chan struct{})
	col := newCollector(ackNow)
	col.before = func(e *cdc.Event) error {
		<-release // the sink is full
		return nil
	}
	var beats atomic.Int64
	s, reg := newSource(t, Config{StreamARN: f.arn, Heartbeat: func() { beats.Add(1) }}, nil, f.client(),
		openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, col.emit)
	waitUntil(t, 5*time.Second, "ready", s.Ready)
	waitUntil(t, 5*time.Second, "an hour of iterator age", func() bool {
		return gaugeValue(t, reg, "cdcbridge_dynamodb_iterator_age_seconds") > 3500
	})
	if lag := s.lagSeconds(); lag < 3500 {
		t.Errorf("lag %v s while an hour-old record waits, want about 3600", lag)
	}
	close(release)
	col.waitFor(t, 3, 5*time.Second, r)
	waitUntil(t, 5*time.Second, "iterator age back to 0", func() bool {
		return gaugeValue(t, reg, "cdcbridge_dynamodb_iterator_age_seconds") == 0
	})
	b := beats.Load()
	time.Sleep(1500 * time.Millisecond) // idle: nothing to read
	if beats.Load() <= b {
		t.Error("no heartbeat while idle")
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// gaugeValue reads a gauge of reg by name.
func gaugeValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
