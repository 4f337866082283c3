package chaos

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// waitStreaming waits until the Postgres source streams from its slot:
// the slot and its (empty) initial snapshot are done, so every change
// committed from now on is the slot's to deliver.
func waitStreaming(t *testing.T, b *Bridge) {
	t.Helper()
	b.WaitReady(90 * time.Second)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := b.Status(); err == nil {
			if src, ok := st["source"].(map[string]any); ok && src["confirmed_lsn"] != nil && src["confirmed_lsn"] != "" {
				return
			}
		}
		select {
		case <-b.Exited():
			t.Fatalf("cdcbridge exited (code %d) before streaming\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("cdcbridge not streaming after 90s\n%s", b.LogTail(40))
}

// killLoop kills the bridge with SIGKILL n times at random moments,
// restarting it each time.
func killLoop(t *testing.T, b *Bridge, rng *rand.Rand, n int, maxUp time.Duration) {
	t.Helper()
	for i := range n {
		up := time.Duration(200+rng.IntN(int(maxUp/time.Millisecond))) * time.Millisecond
		select {
		case <-b.Exited():
			t.Fatalf("cdcbridge exited on its own (code %d)\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(up):
		}
		b.Kill()
		logf(t, "kill -9 #%d after %s up", i+1, up)
		sleep(context.Background(), time.Duration(rng.IntN(500))*time.Millisecond)
		b.Start()
		b.WaitReady(90 * time.Second)
	}
}

// TestKill9Postgres: SIGKILL at random moments under load, at least ten
// times, restarting each time. Nothing may be lost, first occurrences keep
// each row's order, repeats are byte-identical.
func TestKill9Postgres(t *testing.T) {
	const name = "kill -9 (postgres)"
	t.Parallel()
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	rng := params.Rand(name + "/faults")
	r.Work.Changes = Pick(params, 5000, 100000)
	r.Work.TxPerSecond = Pick(params, 60.0, 60.0)
	r.Work.LargeProb = 0.01
	r.Work.BigTxProb = Pick(params, 0.005, 0.0005) // large transactions a share of the load, not most of it
	r.Work.BigTxSize = Pick(params, [2]int{200, 800}, [2]int{1000, 5000})
	b := NewBridge(t, r.env(pg.URL(r.DB), r.Kinesis)...)
	b.Start()
	waitStreaming(t, b)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
	killLoop(t, b, rng, Pick(params, 10, 20), Pick(params, 1500*time.Millisecond, 12*time.Second))
	wait()
	logf(t, "workload done: %d changes, %d ambiguous transactions", r.Work.Committed(), r.Work.Ambiguous())
	r.finish(b, Pick(params, 2*time.Minute, 5*time.Minute))
}

// TestKill9DynamoDB: the same against a DynamoDB Local stream.
func TestKill9DynamoDB(t *testing.T) {
	const name = "kill -9 (dynamodb)"
	t.Parallel()
	ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
	r := newDDBRig(t, name, ddb, kin)
	rng := params.Rand(name + "/faults")
	r.Work.Changes = Pick(params, 1500, 5000)
	r.Work.TxPerSecond = Pick(params, 25.0, 8.0)
	r.Work.LargeProb = 0.01
	r.Work.BigTxProb = 0.02
	b := NewBridge(t, r.env(r.DDB.Endpoint, r.Kinesis)...)
	b.Start()
	b.WaitReady(90 * time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
	killLoop(t, b, rng, Pick(params, 10, 15), Pick(params, 1500*time.Millisecond, 12*time.Second))
	wait()
	logf(t, "workload done: %d changes", r.Work.Committed())
	r.finish(b, Pick(params, 2*time.Minute, 5*time.Minute))
}
