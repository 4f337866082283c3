package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestKinesisFaults runs the Postgres bridge through a fault-injecting
// Kinesis endpoint in front of kinesalite, under load: 30% of entries
// throttled, 5% InternalFailure, 2% of requests answered 500, answers
// held past the request timeout, answers lost (reset before any byte, or
// cut off in the middle of the body) and a total outage (30 seconds in the
// long form), while the workload keeps writing.
func TestKinesisFaults(t *testing.T) {
	const name = "kinesis faults"
	t.Parallel()
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	rng := params.Rand(name + "/faults")
	r.Work.Changes = Pick(params, 2500, 60000)
	r.Work.TxPerSecond = Pick(params, 40.0, 25.0)
	r.Work.HotRows = Pick(params, 60, 20) // fewer updates per hot row: a key moves at one record per round trip
	r.Work.LargeProb = 0.01
	r.Work.BigTxProb = Pick(params, 0.005, 0.0005)
	r.Work.BigTxSize = Pick(params, [2]int{200, 800}, [2]int{1000, 4000})

	fake := kinesisfake.New(kinesisfake.Options{Upstream: kin.Endpoint, Seed: rng.Uint64()})
	t.Cleanup(fake.Close)
	proxy, err := NewProxy(fake.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	const requestTimeout = 5 * time.Second // kinesalite on a loaded machine can take seconds for 500 records
	b := NewBridge(t, append(r.env(pg.URL(r.DB), proxy.URL()),
		"CDCBRIDGE_KINESIS_REQUEST_TIMEOUT="+requestTimeout.String(),
		"CDCBRIDGE_KINESIS_CONNECT_TIMEOUT=1s")...)
	b.Start()
	waitStreaming(t, b)

	faults := kinesisfake.Faults{
		ThrottleEntries: 0.30,
		FailEntries:     0.05,
		FailRequests:    0.02, // InternalFailure, HTTP 500
		SlowRequests:    0.03,
		Delay:           requestTimeout + time.Second, // past the request timeout; applied anyway
		LoseResponses:   0.02,
		LoseMode:        kinesisfake.Reset,
	}
	fake.SetFaults(faults)
	proxy.SetMidBodyResets(0.02, params.Rand(name+"/resets"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })

	// Lost answers alternate between a reset before any byte and a
	// truncated body; the outage comes once a third of the work is done.
	outage := Pick(params, 5*time.Second, 30*time.Second)
	outageDone := false
	modes := []kinesisfake.LoseMode{kinesisfake.Reset, kinesisfake.Truncate}
	for i := 0; r.Work.Committed() < int64(r.Work.Changes); i++ {
		select {
		case <-b.Exited():
			t.Fatalf("cdcbridge exited (code %d) under Kinesis faults\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(2 * time.Second):
		}
		faults.LoseMode = modes[i%len(modes)]
		fake.SetFaults(faults)
		if !outageDone && r.Work.Committed() > int64(r.Work.Changes/3) {
			logf(t, "Kinesis outage for %s", outage)
			proxy.SetDown(true)
			select {
			case <-b.Exited():
				t.Fatalf("cdcbridge exited (code %d) during the outage\n%s", b.ExitCode(), b.LogTail(40))
			case <-time.After(outage):
			}
			proxy.SetDown(false)
			outageDone = true
			logf(t, "Kinesis back")
		}
	}
	wait()
	// The faults last as long as the load, and while the backlog drains
	// until a request-level fault was drawn (a short run may send only a
	// few dozen requests); then the rest of the backlog drains.
	requestFaults := func() int64 {
		c := fake.Counts()
		return c.FailedRequests + c.LostResponses + c.SlowRequests + proxy.MidBodyResets()
	}
	for i := 0; i < 60 && requestFaults() == 0; i++ {
		time.Sleep(time.Second)
	}
	fake.SetFaults(kinesisfake.Faults{})
	proxy.SetMidBodyResets(0, nil)
	c := fake.Counts()
	logf(t, "workload done: %d changes; fake: %d put requests, %d failed entries, %d failed requests, %d lost answers, %d slow, %d mid-body resets",
		r.Work.Committed(), c.PutRequests, c.FailedEntries, c.FailedRequests, c.LostResponses, c.SlowRequests, proxy.MidBodyResets())
	// Per-entry failures come by the hundred; the rarer request faults are
	// drawn at random, so only their sum must be positive.
	if c.FailedEntries == 0 || requestFaults() == 0 {
		t.Errorf("the faults did not happen: %+v, %d mid-body resets", c, proxy.MidBodyResets())
	}
	res := r.finish(b, Pick(params, 3*time.Minute, 6*time.Minute))
	if res.Duplicates == 0 {
		t.Errorf("lost and late answers made no duplicates: are the faults reaching the bridge?")
	}
	if !outageDone {
		t.Errorf("the outage did not happen")
	}
}
