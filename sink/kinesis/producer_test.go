package kinesis

import (
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
)

func TestDeliversInKeyOrder(t *testing.T) {
	for _, agg := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "aggregated"}[agg], func(t *testing.T) {
			h := newHarness(t, harnessOpts{fake: kinesisfake.Options{Shards: 4, Keep: true}, cfg: Config{Aggregate: agg}})
			h.start()
			h.putKeys(3000, 50, 100)
			h.flush(20 * time.Second)
			h.checkAcks()
			h.checkStream(fakeRecords(h.fake), true)
			c := h.fake.Counts()
			if agg && c.Aggregates == 0 {
				t.Errorf("no aggregates sent: %+v", c)
			}
			if !h.p.Ready() {
				t.Error("not ready")
			}
		})
	}
}
