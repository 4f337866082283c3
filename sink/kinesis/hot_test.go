package kinesis

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/internal/kinesisfake"
	"github.com/cdcbridge/cdcbridge/internal/testenv"
)

// AggregateHot under 30% throttled entries, one key taking half of all
// events and every other key put once: the hot key's runs go out as
// aggregates holding only that key, every other record goes plain, and
// the stream holds every event with first occurrences in Put order.
func TestAggregateHot(t *testing.T) {
	for _, target := range []string{"fake", "kinesalite"} {
		t.Run(target, func(t *testing.T) {
			o := harnessOpts{fake: kinesisfake.Options{Shards: 3, Keep: true, Seed: 5}, cfg: Config{AggregateHot: true}}
			if target == "kinesalite" {
				o = harnessOpts{upstream: testenv.Kinesalite(t), shards: 3, fake: kinesisfake.Options{Seed: 5}, cfg: Config{AggregateHot: true}}
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
			if target == "kinesalite" {
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
			// A round trip per hot record would take n/2 requests.
			if c.PutRequests >= n/2 {
				t.Errorf("%d requests for %d hot events: the hot key moved one record per round trip", c.PutRequests, n/2)
			}
		})
	}
}
