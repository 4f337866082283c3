package kinesis

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// AggregateHot under 30% throttled entries, one key taking half of all
// events and every other key put once: the hot key's runs go out as
// aggregates holding only that key (gzipped with CompressAggregates),
// every other record goes plain, and the stream holds every event with
// first occurrences in Put order.
func TestAggregateHot(t *testing.T) {
	for _, tc := range []struct {
		target string
		gzip   bool
	}{{"fake", false}, {"kinesalite", false}, {"fake", true}, {"kinesalite", true}} {
		name := tc.target
		if tc.gzip {
			name += "/gzip"
		}
		t.Run(name, func(t *testing.T) {
			cfg := Config{AggregateHot: true, CompressAggregates: tc.gzip}
			o := harnessOpts{fake: kinesisfake.Options{Shards: 3, Keep: true, Seed: 5}, cfg: cfg}
			if tc.target == "kinesalite" {
				o = harnessOpts{upstream: testenv.Kinesalite(t), shards: 3, fake: kinesisfake.Options{Seed: 5}, cfg: cfg}
			}
			h := newHarness(t, o)
			h.fake.SetFaults(kinesisfake.Faults{ThrottleEntries: 0.3})
			h.start()
			const n = 4000
			ctx := context.Background()
			for i := range n {
				key := "hot"
				if i%2 == 1 {
					key = fmt.Sprintf("cold%d", i)
				}
				if err := h.put(ctx, h.event(key, 100)); err != nil {
					t.Fatalf("Put %d: %v", i, err)
				}
			}
			h.flush(2 * time.Minute)
			h.fake.SetFaults(kinesisfake.Faults{})
			h.checkAcks()
			var recs []userRec
			if tc.target == "kinesalite" {
				recs = readStream(t, o.upstream.Client(), h.p.cfg.Stream)
			} else {
				recs = fakeRecords(h.fake)
			}
			h.checkStream(recs, true)

			hotPK := h.event("hot", 0).PartitionKey
			aggregated := 0
			for _, u := range recs {
				switch {
				case u.aggregated && u.pk != hotPK:
					t.Fatalf("event %s of key %s, put once, reached the stream inside an aggregate", u.ev.ID, u.pk)
				case u.aggregated != u.compressed && tc.gzip:
					t.Fatalf("event %s: aggregated %v, compressed %v; with CompressAggregates every aggregate is compressed and nothing else", u.ev.ID, u.aggregated, u.compressed)
				case u.compressed && !tc.gzip:
					t.Fatalf("event %s reached the stream compressed without CompressAggregates", u.ev.ID)
				case u.aggregated:
					aggregated++
					if u.recordPK != hotPK {
						t.Fatalf("an aggregate of the hot key carries partition key %q", u.recordPK)
					}
				}
			}
			c := h.fake.Counts()
			st := h.p.Status().(Status)
			t.Logf("%d of %d hot events in aggregates; fake: %d requests, %d throttled entries; status: %d aggregates (%d records), mode %s",
				aggregated, n/2, c.PutRequests, c.FailedEntries, st.Aggregates, st.AggregatedRecords, st.AggregateMode)
			if c.FailedEntries == 0 {
				t.Errorf("no entry was throttled: %+v", c)
			}
			if aggregated == 0 || st.Aggregates == 0 || st.AggregatedRecords < st.Aggregates*2 {
				t.Errorf("the hot key went out without aggregates: %d aggregated on the stream, status %d aggregates of %d records",
					aggregated, st.Aggregates, st.AggregatedRecords)
			}
			if !st.Aggregate || st.AggregateMode != "hot" {
				t.Errorf("status aggregate %v, mode %q; want true, hot", st.Aggregate, st.AggregateMode)
			}
			if want := map[bool]string{false: "none", true: "gzip"}[tc.gzip]; st.Compression != want || (st.CompressionRatio > 1) != tc.gzip {
				t.Errorf("status compression %q, ratio %v; want %s and a ratio above 1 only with gzip", st.Compression, st.CompressionRatio, want)
			}
			// A round trip per hot record would take n/2 requests.
			if c.PutRequests >= n/2 {
				t.Errorf("%d requests for %d hot events: the hot key moved one record per round trip", c.PutRequests, n/2)
			}
		})
	}
}

// TestCompressedAggregatesPaced: with CompressAggregates a hot key's
// aggregates hold what compresses into the shard's tokens, so the key
// moves far faster than its envelopes' bytes would allow, while the
// bytes sent stay within the shard's pacing: everything the stream
// took, less one burst and the last aggregate, fits in the rate times
// the time it took.
func TestCompressedAggregatesPaced(t *testing.T) {
	const headroom = 0.05 // 52,429 bytes/s
	h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 1, Keep: true},
		cfg: Config{AggregateHot: true, CompressAggregates: true, ShardHeadroom: headroom}})
	kib := int32(64) // the burst: one record
	h.fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
	const n = 4000
	raw := 0
	ctx := context.Background()
	for range n {
		e := h.event("hot", 300)
		b, _ := cdc.Encode(e)
		raw += len(b)
		if err := h.put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	h.start()
	h.flush(time.Minute)
	took := time.Since(start)
	h.checkAcks()
	recs := fakeRecords(h.fake)
	h.checkStream(recs, true)
	sent, largest := 0, 0
	for _, r := range h.fake.Records() {
		sent += len(r.Data) + len(r.PartitionKey)
		largest = max(largest, len(r.Data)+len(r.PartitionKey))
	}
	rate := shardBytesPerSecond * headroom
	st := h.p.Status().(Status)
	t.Logf("%d envelope bytes sent as %d in %d aggregates in %v (ratio %.1f); %.0f bytes/s pacing", raw, sent, st.Aggregates, took, st.CompressionRatio, rate)
	if plain := time.Duration(float64(raw) / rate * float64(time.Second)); took > plain/4 {
		t.Errorf("took %v; the envelopes alone, paced, take %v: compression did not let more of them through", took, plain)
	}
	// The last aggregate may have gone out on credit (its shard would
	// have waited before the next).
	if least := time.Duration(float64(sent-int(kib)<<10-largest) / rate * float64(time.Second)); took < least {
		t.Errorf("sent %d bytes in %v; pacing allows one burst of %d KiB plus %.0f bytes/s (and the last aggregate of %d bytes on credit), which takes at least %v",
			sent, took, kib, rate, largest, least)
	}
}
