package kinesis

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
)

var update = flag.Bool("update", false, "rewrite golden files")

// dlqLine is one line of a dead-letter file.
type dlqLine struct {
	Reason   string          `json:"reason"`
	Stream   string          `json:"stream"`
	Bytes    int             `json:"bytes"`
	Time     string          `json:"time"`
	Envelope json.RawMessage `json:"envelope"`
}

func readDLQ(t *testing.T, dir string) map[string]dlqLine {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "dlq-*.jsonl"))
	out := map[string]dlqLine{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 64<<20)
		for n := 1; sc.Scan(); n++ {
			var l dlqLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%s line %d: %v", f, n, err)
			}
			out[filepath.Base(f)+"#"+strconv.Itoa(n)] = l
		}
		fh.Close()
	}
	return out
}

// checkPlaceholders checks that each dead-lettered event has a line in the
// directory and a placeholder on the stream, pointing at that line.
func checkPlaceholders(t *testing.T, dir string, recs []userRec, ids map[string]bool, reason string) {
	t.Helper()
	lines := readDLQ(t, dir)
	found := map[string]bool{}
	for _, u := range recs {
		if u.ev == nil || u.ev.Oversize == nil {
			continue
		}
		l, ok := lines[u.ev.Oversize.DLQ]
		if !ok {
			t.Errorf("placeholder of %s points at %q, not a line of the directory", u.ev.ID, u.ev.Oversize.DLQ)
			continue
		}
		orig, err := cdc.Decode(l.Envelope)
		if err != nil {
			t.Errorf("dead-letter line %s: %v", u.ev.Oversize.DLQ, err)
			continue
		}
		if orig.ID != u.ev.ID || orig.Sequence != u.ev.Sequence || orig.PartitionKey != u.ev.PartitionKey || u.ev.After != nil {
			t.Errorf("placeholder %+v does not stand for %+v", u.ev, orig)
		}
		if !strings.HasPrefix(l.Reason, reason) || l.Stream == "" || l.Bytes != u.ev.Oversize.Bytes {
			t.Errorf("dead-letter line %+v", l)
		}
		found[u.ev.ID] = true
	}
	for id := range ids {
		if !found[id] {
			t.Errorf("event %s: no placeholder on the stream", id)
		}
	}
	if len(lines) != len(ids) {
		t.Errorf("%d dead-letter lines, want %d", len(lines), len(ids))
	}
}

func TestPoisonRecordGoesToDLQ(t *testing.T) {
	for _, cfg := range []Config{{}, {Aggregate: true}, {Aggregate: true, CompressAggregates: true}} {
		t.Run(map[string]string{"false": "plain", "true": "aggregated"}[cfg.AggregateMode()]+map[bool]string{true: "/gzip"}[cfg.CompressAggregates], func(t *testing.T) {
			dir := t.TempDir()
			cfg.DLQDir = dir
			h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 2, Keep: true}, cfg: cfg})
			h.fake.SetFaults(kinesisfake.Faults{Poison: []byte("POISON")})
			h.start()
			ctx := context.Background()
			poison := map[string]bool{}
			for i := range 600 {
				e := h.event("k"+strconv.Itoa(i%30), 50)
				if i == 100 || i == 400 {
					e.After = []byte(`{"POISON":true}`)
					poison[e.ID] = true
				}
				if err := h.put(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			h.flush(30 * time.Second)
			h.checkAcks()
			recs := fakeRecords(h.fake)
			h.checkStream(recs, true)
			checkPlaceholders(t, dir, recs, poison, "invalid")
			if got := counterValue(t, h.reg, "cdcbridge_dlq_records_total", "invalid"); got != 2 {
				t.Errorf("cdcbridge_dlq_records_total{reason=invalid} = %v, want 2", got)
			}
		})
	}
}

func TestOversizeGoesToDLQInOrder(t *testing.T) {
	for _, cfg := range []Config{{}, {Aggregate: true}, {Aggregate: true, CompressAggregates: true}} {
		t.Run(map[string]string{"false": "plain", "true": "aggregated"}[cfg.AggregateMode()]+map[bool]string{true: "/gzip"}[cfg.CompressAggregates], func(t *testing.T) {
			dir := t.TempDir()
			cfg.DLQDir = dir
			h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 2, Keep: true}, cfg: cfg})
			kib := int32(2)
			h.fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
			h.fake.SetFaults(kinesisfake.Faults{ThrottleEntries: 0.2})
			h.start()
			ctx := context.Background()
			big := map[string]bool{}
			for i := range 300 {
				size := 100
				if i%50 == 7 {
					size = 3000
				}
				e := h.event("k"+strconv.Itoa(i%10), size)
				if size > 1000 {
					big[e.ID] = true
				}
				if err := h.put(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			h.flush(30 * time.Second)
			h.checkAcks()
			recs := fakeRecords(h.fake)
			h.checkStream(recs, true)
			checkPlaceholders(t, dir, recs, big, "oversize")
			if c := h.fake.Counts(); c.Rejected != 0 {
				t.Errorf("%d requests rejected: an oversize record was sent", c.Rejected)
			}
		})
	}
}

func TestOversizeFailStops(t *testing.T) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{Oversize: OversizeFail}})
	kib := int32(1)
	h.fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
	h.start()
	ctx := context.Background()
	big := h.event("a", 2000)
	if err := h.put(ctx, big); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.runErr:
		if err == nil || !strings.Contains(err.Error(), big.ID) || !strings.Contains(err.Error(), "CDCBRIDGE_OVERSIZE=fail") {
			t.Fatalf("Run: %v, want an error naming event %s", err, big.ID)
		}
		h.runErr <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop on an oversize record")
	}
	if err := h.p.Put(ctx, h.event("b", 0)); err == nil || !strings.Contains(err.Error(), big.ID) {
		t.Fatalf("Put after the failure: %v", err)
	}
	if h.acks[big.ID] != 0 {
		t.Fatal("oversize event acked")
	}
}

// TestDLQWriteFailureStops: a dead-letter directory that cannot take the
// line (here replaced by a file, which stops root too) stops the producer
// with an error naming the directory once DLQFailureLimit has passed; the
// event is never acknowledged.
func TestDLQWriteFailureStops(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dlq")
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: Config{DLQDir: dir, DLQFailureLimit: 300 * time.Millisecond}})
	kib := int32(1)
	h.fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
	h.start()
	ctx := context.Background()
	small := h.event("a", 10)
	if err := h.put(ctx, small); err != nil {
		t.Fatal(err)
	}
	h.flush(10 * time.Second)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := h.event("b", 2000)
	if err := h.put(ctx, big); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.runErr:
		if err == nil || !strings.Contains(err.Error(), "dead-letter directory "+dir) || !strings.Contains(err.Error(), big.ID) {
			t.Fatalf("Run: %v, want an error naming the directory and event %s", err, big.ID)
		}
		h.runErr <- err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop while dead-letter writes failed")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.acks[big.ID] != 0 {
		t.Fatal("an event whose dead-letter line was never written was acknowledged")
	}
	if h.acks[small.ID] != 1 {
		t.Fatalf("the small event was acked %d times", h.acks[small.ID])
	}
}

// TestDLQLineGolden pins the dead-letter line and placeholder formats.
func TestDLQLineGolden(t *testing.T) {
	dir := t.TempDir()
	w := newDLQWriter(dir, "orders", nil)
	e := &cdc.Event{
		ID: "00000000016B3748:00000003", Source: "/cdcbridge/postgres/1/appdb/cdcbridge", Subject: "public.orders",
		Time: time.Date(2026, 11, 26, 10, 15, 2, 123456000, time.UTC), PartitionKey: "public.orders:[42]",
		Sequence: "00000000016B3748:00000003", Op: cdc.OpUpdate, Key: []byte(`{"id":42}`),
		Before: []byte(`{"id":42,"status":"new"}`), After: []byte(`{"id":42,"status":"paid"}`),
		Info: cdc.SourceInfo{CommitLSN: "0/16B3748", Ordinal: 3, Schema: "public", Table: "orders"},
	}
	buf, _ := cdc.Encode(e)
	r := &record{id: e.ID, subject: e.Subject, buf: buf, pk: e.PartitionKey}
	j := dlqJob{r: r, reason: "oversize", detail: "record of 400 bytes exceeds the stream's limit of 300 bytes", limit: 1 << 20}
	ref, err := w.write(j)
	if err != nil {
		t.Fatal(err)
	}
	ph, err := placeholder(j, ref)
	if err != nil {
		t.Fatal(err)
	}
	w.f.Close()
	line, _ := os.ReadFile(filepath.Join(dir, w.name))
	got := regexp.MustCompile(`,"time":"[^"]*","envelope"`).ReplaceAll(line, []byte(`,"time":"T","envelope"`))
	got = append(got, bytes.ReplaceAll(ph, []byte(w.name), []byte("FILE"))...)
	got = append(got, '\n')
	golden := filepath.Join("testdata", "dlq.golden")
	if *update {
		os.WriteFile(golden, got, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("dead-letter line and placeholder:\n%s\nwant:\n%s", got, want)
	}
	if !strings.HasSuffix(ref, "#1") {
		t.Errorf("ref %q, want line 1", ref)
	}
}

// TestAggregationNearRecordLimit: a record that fits the stream's limit
// plain but not as an aggregate is sent plain (not dead-lettered, not
// stuck waiting for tokens it can never have).
func TestAggregationNearRecordLimit(t *testing.T) {
	for _, gzip := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "gzip"}[gzip], func(t *testing.T) {
			testAggregationNearRecordLimit(t, Config{Aggregate: true, CompressAggregates: gzip})
		})
	}
}

func testAggregationNearRecordLimit(t *testing.T, cfg Config) {
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Keep: true}, cfg: cfg})
	kib := int32(2)
	h.fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
	h.start()
	ctx := context.Background()
	long := strings.Repeat("k", 180) // the aggregate repeats the key
	for i := range 5 {
		// Find the padding that makes the record 1990 of 2048 bytes:
		// under the limit plain, over it as an aggregate.
		pad := 10
		for {
			e := h.event(long+strconv.Itoa(i), pad)
			b, _ := cdc.Encode(e)
			size := len(b) + len(e.PartitionKey)
			if size >= 1990 {
				if size > 2000 {
					t.Fatalf("record of %d bytes, want 1990", size)
				}
				if err := h.put(ctx, e); err != nil {
					t.Fatal(err)
				}
				break
			}
			h.mu.Lock()
			h.n-- // reuse the id
			h.mu.Unlock()
			pad += 1990 - size
		}
	}
	h.putKeys(20, 5, 10)
	h.flush(10 * time.Second)
	h.checkAcks()
	recs := fakeRecords(h.fake)
	h.checkStream(recs, true)
	for _, r := range recs {
		if r.ev.Oversize != nil {
			t.Fatalf("event %s dead-lettered though it fits the stream's limit: %+v %d", r.ev.ID, r.ev.Oversize, len(r.pk))
		}
	}
}
