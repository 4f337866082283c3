package dynamodb

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
)

func putVersions(f *fakeStreams, shard string, items []int, from, to int, want map[itemVersion]bool) {
	for v := from; v <= to; v++ {
		for _, it := range items {
			f.put(shard, change(it, v))
			if want != nil {
				want[itemVersion{it, v}] = true
			}
		}
	}
}

// TestExpiredIterator: the sink holds an event longer than an iterator
// lives; the reader gets a new iterator after the last record it read,
// with nothing repeated or skipped.
func TestExpiredIterator(t *testing.T) {
	f := newFakeStreams(t)
	f.pageSize = 10
	f.iterTTL = 500 * time.Millisecond
	want := map[itemVersion]bool{}
	f.addShard("shardId-1", "")
	putVersions(f, "shardId-1", []int{1, 2, 3, 4, 5}, 1, 10, want)
	col := newCollector(ackNow)
	n := 0
	col.before = func(e *cdc.Event) error {
		n++
		if n == 15 || n == 31 {
			time.Sleep(time.Second) // the sink is slow
		}
		return nil
	}
	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	s, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), store)
	r := start(t, s, col.emit)
	col.waitFor(t, len(want), 10*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	events := col.snapshot()
	if len(events) != len(want) {
		t.Errorf("%d events, want %d: a renewed iterator repeated or skipped records", len(events), len(want))
	}
	checkDelivery(t, events, want)
	f.mu.Lock()
	types := slices.Clone(f.iterTypes)
	f.mu.Unlock()
	var after []string
	for _, it := range types {
		if strings.Contains(it, "AFTER_SEQUENCE_NUMBER") {
			after = append(after, it)
		}
	}
	if len(after) < 2 {
		t.Fatalf("GetShardIterator calls %v: want renewals AFTER_SEQUENCE_NUMBER", types)
	}
	// The first renewal continues after the 20th record (two pages read, the
	// 15th held the sink past the iterator's life).
	if wantIt := "shardId-1 AFTER_SEQUENCE_NUMBER " + f.shard("shardId-1").records[19].seq; after[0] != wantIt {
		t.Errorf("first renewal %q, want %q", after[0], wantIt)
	}
	if got := testutil.ToFloat64(s.m.apiErrors.WithLabelValues("GetRecords", "ExpiredIteratorException")); got < 2 {
		t.Errorf("api errors{GetRecords,ExpiredIteratorException} = %v, want >= 2", got)
	}
}

// TestTrimmed: the checkpoint points at records that have expired.
func TestTrimmed(t *testing.T) {
	for _, policy := range []string{OnTrimmedFail, OnTrimmedSkip} {
		t.Run(policy, func(t *testing.T) {
			f := newFakeStreams(t)
			f.addShard("shardId-1", "")
			putVersions(f, "shardId-1", []int{1}, 1, 10, nil)
			sh := f.shard("shardId-1")
			store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
			ctx := context.Background()
			// Read up to version 3 in an earlier run; versions 1-6 expired since.
			if err := store.Save(ctx, streamScope(f.arn), checkpoint.Checkpoint{Position: markerPosition}); err != nil {
				t.Fatal(err)
			}
			if err := store.Save(ctx, shardKey(f.arn, "shardId-1"), checkpoint.Checkpoint{Position: pad(sh.records[2].seq)}); err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			sh.trimmed = 6
			f.mu.Unlock()
			col := newCollector(ackNow)
			s, _ := newSource(t, Config{StreamARN: f.arn, OnTrimmed: policy}, nil, f.client(), store)
			r := start(t, s, col.emit)
			if policy == OnTrimmedFail {
				if err := r.wait(t, 10*time.Second); !errors.Is(err, ErrTrimmed) {
					t.Fatalf("Run: %v, want ErrTrimmed", err)
				}
				if col.len() != 0 {
					t.Errorf("%d events emitted past a gap under fail", col.len())
				}
				c, _ := store.Load(ctx, shardKey(f.arn, "shardId-1"))
				if c.Position != pad(sh.records[2].seq) {
					t.Errorf("checkpoint moved to %q under fail", c.Position)
				}
			} else {
				col.waitFor(t, 4, 10*time.Second, r)
				if err := r.stop(t); err != nil {
					t.Fatal(err)
				}
				var got []int
				for _, e := range col.snapshot() {
					got = append(got, versionOf(t, e).version)
				}
				if !slices.Equal(got, []int{7, 8, 9, 10}) {
					t.Errorf("versions after skipping the trimmed ones: %v, want [7 8 9 10]", got)
				}
			}
			if got := testutil.ToFloat64(s.m.trimmed); got != 1 {
				t.Errorf("cdcbridge_dynamodb_trimmed_total = %v, want 1", got)
			}
		})
	}
}

// TestTrimmedDuringRead: GetRecords itself reports trimmed data (the reader
// fell 24 hours behind); skip continues from the horizon.
func TestTrimmedDuringRead(t *testing.T) {
	f := newFakeStreams(t)
	f.pageSize = 5
	f.addShard("shardId-1", "")
	putVersions(f, "shardId-1", []int{1}, 1, 20, nil)
	col := newCollector(ackNow)
	n := 0
	col.before = func(e *cdc.Event) error {
		n++
		if n == 5 {
			f.mu.Lock()
			f.shard("shardId-1").trimmed = 12 // versions 6-12 expire while 5 is emitted
			f.mu.Unlock()
		}
		return nil
	}
	s, _ := newSource(t, Config{StreamARN: f.arn, OnTrimmed: OnTrimmedSkip}, nil, f.client(),
		openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, col.emit)
	col.waitFor(t, 13, 10*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, e := range col.snapshot() {
		got = append(got, versionOf(t, e).version)
	}
	want := []int{1, 2, 3, 4, 5, 13, 14, 15, 16, 17, 18, 19, 20}
	if !slices.Equal(got, want) {
		t.Errorf("versions %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(s.m.trimmed); got != 1 {
		t.Errorf("trimmed_total = %v, want 1", got)
	}
}

// TestEmptyPagesBeforeRecords: empty pages (with a next iterator) do not
// end a shard, open or closed.
func TestEmptyPagesBeforeRecords(t *testing.T) {
	f := newFakeStreams(t)
	want := map[itemVersion]bool{}
	f.addShard("shardId-closed", "")
	f.addShard("shardId-open", "")
	f.addShard("shardId-child", "shardId-closed")
	putVersions(f, "shardId-closed", []int{1}, 1, 5, want)
	putVersions(f, "shardId-open", []int{2}, 1, 5, want)
	putVersions(f, "shardId-child", []int{1}, 6, 7, want)
	f.close("shardId-closed")
	f.mu.Lock()
	f.shard("shardId-closed").emptyPages = 4
	f.shard("shardId-open").emptyPages = 4
	f.mu.Unlock()
	store := openFileStore(t, filepath.Join(t.TempDir(), "c.json"))
	col := newCollector(ackNow)
	col.before = guardParents(t, store, f.arn, map[string]string{"shardId-child": "shardId-closed"})
	s, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), store)
	r := start(t, s, col.emit)
	col.waitFor(t, len(want), 10*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkDelivery(t, col.snapshot(), want)
}

// TestThrottlingAndServerErrors: throttling, 5xx and calls that hang are
// retried with backoff, counted by code, and reported as degraded.
func TestThrottlingAndServerErrors(t *testing.T) {
	f := newFakeStreams(t)
	f.pageSize = 7
	want := map[itemVersion]bool{}
	f.addShard("shardId-1", "")
	f.addShard("shardId-2", "shardId-1")
	putVersions(f, "shardId-1", []int{1, 2}, 1, 20, want)
	f.close("shardId-1")
	putVersions(f, "shardId-2", []int{1, 2}, 21, 30, want)
	f.fail("DescribeStream", "LimitExceededException", 400, 3)
	f.fail("GetShardIterator", "LimitExceededException", 400, 2)
	f.fail("GetRecords", "LimitExceededException", 400, 4)
	f.fail("GetRecords", "ThrottlingException", 400, 1)
	f.fail("GetRecords", "InternalServerError", 500, 2)
	f.fail("GetRecords", "ServiceUnavailable", 503, 1)
	f.stallFor = time.Second
	f.stalls["GetRecords"] = 1
	col := newCollector(ackAsync)
	s, _ := newSource(t, Config{StreamARN: f.arn, RequestTimeout: 200 * time.Millisecond}, nil, f.client(),
		openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, col.emit)
	col.waitFor(t, len(want), 20*time.Second, r)
	st := s.Status().(Status)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkDelivery(t, col.snapshot(), want)
	for _, c := range []struct {
		op, code string
		min      float64
	}{
		{"DescribeStream", "LimitExceededException", 3},
		{"GetShardIterator", "LimitExceededException", 2},
		{"GetRecords", "LimitExceededException", 4},
		{"GetRecords", "ThrottlingException", 1},
		{"GetRecords", "InternalServerError", 2},
		{"GetRecords", "http_503", 1},
		{"GetRecords", "timeout", 1},
	} {
		got := testutil.ToFloat64(s.m.apiErrors.WithLabelValues(c.op, c.code))
		if c.code == "http_503" {
			got += testutil.ToFloat64(s.m.apiErrors.WithLabelValues(c.op, "ServiceUnavailable"))
		}
		if got < c.min {
			t.Errorf("api errors{%s,%s} = %v, want >= %v", c.op, c.code, got, c.min)
		}
	}
	if !slices.ContainsFunc(st.Degraded, func(s string) bool { return strings.Contains(s, "GetRecords retrying") }) {
		t.Errorf("Status().Degraded = %q, want a GetRecords retry reason", st.Degraded)
	}
}

// TestStreamGone: the stream disappears while read (table deleted).
func TestStreamGone(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	putVersions(f, "shardId-1", []int{1}, 1, 3, nil)
	col := newCollector(ackNow)
	s, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, col.emit)
	col.waitFor(t, 3, 10*time.Second, r)
	f.mu.Lock()
	f.status = "GONE"
	f.mu.Unlock()
	err := r.wait(t, 10*time.Second)
	if !errors.Is(err, ErrStreamGone) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("Run: %v, want ErrStreamGone explaining why", err)
	}
}

// TestWrongStreamARN fails clearly at start and is never ready.
func TestWrongStreamARN(t *testing.T) {
	f := newFakeStreams(t)
	s, _ := newSource(t, Config{StreamARN: f.arn + "x"}, nil, f.client(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, newCollector(ackNow).emit)
	if err := r.wait(t, 10*time.Second); !errors.Is(err, ErrStreamGone) {
		t.Fatalf("Run: %v, want ErrStreamGone", err)
	}
	if s.Ready() {
		t.Error("Ready after failing to find the stream")
	}
}

// TestDisabledStreamEnds: a disabled stream is read to its end, then Run
// stops with a message saying so.
func TestDisabledStreamEnds(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	putVersions(f, "shardId-1", []int{1, 2}, 1, 3, nil)
	f.close("shardId-1")
	f.status = "DISABLED"
	col := newCollector(ackNow)
	s, _ := newSource(t, Config{StreamARN: f.arn}, nil, f.client(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, col.emit)
	err := r.wait(t, 10*time.Second)
	if !errors.Is(err, ErrStreamGone) || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("Run: %v, want ErrStreamGone saying the stream was disabled", err)
	}
	if col.len() != 6 {
		t.Errorf("%d events before stopping, want all 6", col.len())
	}
}

// TestTableFromDescribeTable: Config.Table finds the stream ARN.
func TestTableFromDescribeTable(t *testing.T) {
	f := newFakeStreams(t)
	f.addShard("shardId-1", "")
	putVersions(f, "shardId-1", []int{1}, 1, 2, nil)
	col := newCollector(ackNow)
	s, _ := newSource(t, Config{Table: fakeTable}, f.ddbClient(), f.client(), openFileStore(t, filepath.Join(t.TempDir(), "c.json")))
	r := start(t, s, col.emit)
	col.waitFor(t, 2, 10*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	st := s.Status().(Status)
	if st.StreamARN != f.arn || st.ViewType != "NEW_AND_OLD_IMAGES" || st.Table != fakeTable || !st.Ready {
		t.Errorf("status %+v", st)
	}
}
