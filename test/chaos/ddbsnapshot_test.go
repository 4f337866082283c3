package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// largestLoadPage reads the bridge's /status: the most items a page of a
// load's segment held.
func largestLoadPage(b *Bridge) int {
	st, err := b.Status()
	if err != nil {
		return 0
	}
	src, _ := st["source"].(map[string]any)
	snaps, _ := src["snapshots"].([]any)
	most := 0
	for _, s := range snaps {
		m, _ := s.(map[string]any)
		segs, _ := m["segments"].([]any)
		for _, sg := range segs {
			sm, _ := sg.(map[string]any)
			n, _ := sm["largest_page_items"].(float64)
			most = max(most, int(n))
		}
	}
	return most
}

// TestSnapshotKill9DynamoDB: the initial load of a DynamoDB table with
// items (5,000; 50,000 in the long form), read in four segments within a
// small read-capacity budget while the table takes updates, deletes and
// new items (about 200 writes/s; 500 in the long form) and the bridge is
// killed three times during the scan. Nothing written is missing, no
// item's events go back in its history (a read older than a change
// already delivered counts), the stream applied in order equals the table,
// and each kill delivers at most one page per segment again.
func TestSnapshotKill9DynamoDB(t *testing.T) {
	const name = "snapshot kill -9 (dynamodb)"
	const segments, kills = 4, 3
	t.Parallel()
	ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
	r := newDDBRig(t, name, ddb, kin)
	items := Pick(params, 5000, 50000)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := r.Work.Populate(ctx, items); err != nil {
		t.Fatal(err)
	}
	r.Work.Workers = 4
	r.Work.Changes = Pick(params, 5000, 60000)
	r.Work.TxPerSecond = Pick(params, 50.0, 125.0) // per worker
	r.Work.ExistingShare = 0.5
	r.Work.BigTxProb = 0.01
	rng := params.Rand(name + "/kills")
	env := append(r.env(r.DDB.Endpoint, r.Kinesis),
		fmt.Sprintf("CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS=%d", segments),
		// Items of about 40 bytes, a hundred per unit: the scan takes
		// about 15 s (the long form about a minute and a half).
		"CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU="+Pick(params, "3", "6"))
	b := NewBridge(t, env...)
	b.Start()
	b.WaitReady(90 * time.Second)

	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(wctx) })
	during := killDuringSnapshot(t, b, rng, kills, Pick(params, 3*time.Second, 15*time.Second))
	if during == 0 {
		t.Errorf("no kill found the load running")
	}
	waitSnapshotsDone(t, b, Pick(params, 3*time.Minute, 10*time.Minute))
	page := largestLoadPage(b)
	wait()
	logf(t, "workload done: %d changes; the load is done (pages of at most %d items)", r.Work.Committed(), page)
	res := r.finish(b, Pick(params, 3*time.Minute, 10*time.Minute))

	// An item read again after a kill is a new read (its own id).
	again, bound := res.Reads-res.ReadRows, during*segments*page
	logf(t, "%d reads of %d items (%d existed); %d read again, bound %d (one page of at most %d items per segment per kill during the load)",
		res.Reads, res.ReadRows, items, again, bound, page)
	if again > bound {
		t.Errorf("%d reads delivered again after %d kills during the load; at most one page per segment (%d items) per kill", again, during, segments*page)
	}
	if res.Reads == 0 {
		t.Errorf("no read events")
	}
}
