package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

const shutdownTimeout = 10 * time.Second // CDCBRIDGE_SHUTDOWN_TIMEOUT in bridgeEnv

// term stops the bridge with SIGTERM and checks that it exits 0 within
// the shutdown timeout (plus a margin for the exit itself on a loaded
// machine). It returns the most events in flight seen from just before
// the signal until the exit: the source stops emitting when it handles
// the signal, a moment after it was sent.
func term(t *testing.T, b *Bridge) float64 {
	t.Helper()
	inflight, err := b.Metric("cdcbridge_inflight_events")
	if err != nil {
		t.Fatalf("reading in-flight events: %v", err)
	}
	stop := make(chan struct{})
	most := make(chan float64, 1)
	go func() {
		m := inflight
		for {
			select {
			case <-stop:
				most <- m
				return
			case <-time.After(10 * time.Millisecond):
			}
			if v, err := b.Metric("cdcbridge_inflight_events"); err == nil {
				m = max(m, v)
			}
		}
	}()
	code, took := b.Term(shutdownTimeout + 30*time.Second)
	close(stop)
	inflight = <-most
	logf(t, "SIGTERM with %v events in flight: exit %d after %s", inflight, code, took.Round(time.Millisecond))
	if code != 0 {
		t.Errorf("SIGTERM: exit status %d, want 0\n%s", code, b.LogTail(20))
	}
	if took > shutdownTimeout+5*time.Second {
		t.Errorf("SIGTERM: exit took %s, beyond the shutdown timeout of %s", took, shutdownTimeout)
	}
	return inflight
}

// TestShutdown sends SIGTERM under load: the bridge exits within the
// shutdown timeout with a final checkpoint, so that the restart sends
// again at most what was in flight. Then SIGTERM in the middle of a
// Kinesis outage: the flush cannot finish, the bridge must still exit in
// time, and the restart must deliver everything.
func TestShutdown(t *testing.T) {
	t.Parallel()
	t.Run("postgres", func(t *testing.T) {
		const name = "SIGTERM under load (postgres)"
		pg, kin := testenv.PG(t), testenv.Kinesalite(t)
		r := newPGRig(t, name, pg, kin)
		r.Work.Changes = Pick(params, 3000, 20000)
		r.Work.TxPerSecond = Pick(params, 40.0, 60.0)
		r.Work.MaxTxOps = 5
		proxy, err := NewProxy(r.Kinesis)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		b := NewBridge(t, append(r.env(pg.URL(r.DB), proxy.URL()), "CDCBRIDGE_KINESIS_REQUEST_TIMEOUT=3s")...)
		b.Start()
		waitStreaming(t, b)
		shutdownScenario(t, r.rig, b, proxy, func(ctx context.Context) error { return r.Work.Run(ctx) }, r.Work.Committed, r.Work.MaxTxOps)
	})
	t.Run("dynamodb", func(t *testing.T) {
		const name = "SIGTERM under load (dynamodb)"
		ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
		r := newDDBRig(t, name, ddb, kin)
		r.Work.Changes = Pick(params, 800, 5000)
		r.Work.TxPerSecond = Pick(params, 20.0, 20.0)
		proxy, err := NewProxy(r.Kinesis)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		b := NewBridge(t, append(r.env(ddb.Endpoint, proxy.URL()), "CDCBRIDGE_KINESIS_REQUEST_TIMEOUT=3s")...)
		b.Start()
		b.WaitReady(90 * time.Second)
		shutdownScenario(t, r.rig, b, proxy, func(ctx context.Context) error { return r.Work.Run(ctx) }, r.Work.Committed, 0)
	})
}

// shutdownScenario: slack is the most events one transaction may emit
// before the shutdown holds the source: a transaction cut in two is not
// confirmed, so its first part is sent again.
func shutdownScenario(t *testing.T, r *rig, b *Bridge, proxy *Proxy, work func(context.Context) error, committed func() int64, slack int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	workDone := make(chan struct{})
	wait := runAsync(t, "workload", func() error { defer close(workDone); return work(ctx) })
	for round := range Pick(params, 1, 4) {
		target := committed() + int64(200+round*300)
	load:
		for committed() < target {
			select {
			case <-workDone:
				break load
			case <-time.After(100 * time.Millisecond):
			}
		}
		inflight := term(t, b)
		_, before, err := r.read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b.Start()
		b.WaitReady(90 * time.Second)
		// Give the restarted bridge time to send again what it will, then
		// count the changes from before SIGTERM that came again. (Repeats
		// of the new bridge's own retries, a timeout on a loaded machine,
		// are not the restart's.)
		sleep(ctx, 5*time.Second)
		_, after, err := r.read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		resent := resentAfter(before, after)
		logf(t, "after the restart: %d events sent again, %v were in flight at SIGTERM", resent, inflight)
		if float64(resent) > inflight+float64(slack) {
			t.Errorf("the restart sent %d events again; at most the %v in flight (+%d of a transaction cut by the shutdown) may be", resent, inflight, slack)
		}
	}

	// SIGTERM during a Kinesis outage: the flush cannot finish.
	proxy.SetDown(true)
	logf(t, "Kinesis outage")
	sleep(ctx, 2*time.Second)
	term(t, b)
	proxy.SetDown(false)
	b.Start()
	b.WaitReady(90 * time.Second)
	wait()
	r.finish(b, Pick(params, 2*time.Minute, 4*time.Minute))
}

// resentAfter counts the changes read before that appear more often in
// after, which holds them and what came since.
func resentAfter(before, after []verify.Record) int {
	count := func(recs []verify.Record) map[string]int {
		m := map[string]int{}
		for _, r := range recs {
			if r.Env != nil {
				m[r.Env.Source+" "+r.Env.ID]++
			}
		}
		return m
	}
	was, now := count(before), count(after)
	n := 0
	for id, c := range was {
		if now[id] > c {
			n++
		}
	}
	return n
}
