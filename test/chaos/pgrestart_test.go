package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// TestPostgresRestart restarts PostgreSQL under load (fast and immediate
// shutdown: the latter is a crash, and the slot's confirmed position falls
// back to what its last checkpoint saved) and cuts the bridge's
// connections, the replication connection among them, with a TCP reset.
// The bridge must ride through every one, restarted by its supervisor
// when fencing stops it (and for no other reason); KPL aggregation
// is on, so the stream is also read through the verifier's own
// de-aggregation.
func TestPostgresRestart(t *testing.T) {
	const name = "postgres restarts"
	t.Parallel()
	pg := privatePostgres(t, nil)
	kin := testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	rng := params.Rand(name + "/faults")
	r.Work.Changes = Pick(params, 5000, 80000)
	r.Work.TxPerSecond = Pick(params, 50.0, 50.0)
	r.Work.LargeProb = 0.01
	r.Work.BigTxProb = Pick(params, 0.005, 0.0005)
	r.Work.BigTxSize = Pick(params, [2]int{200, 800}, [2]int{1000, 4000})

	proxy, err := NewProxy(fmt.Sprintf("127.0.0.1:%d", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	bridgeURL := fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", proxy.Addr, r.DB)
	b := NewBridge(t, append(r.env(bridgeURL, r.Kinesis), "CDCBRIDGE_KINESIS_AGGREGATE=true")...)
	b.Start()
	waitStreaming(t, b)

	stopSupervising := superviseFencedExits(b)
	defer stopSupervising()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
	faults := Pick(params, []string{"cut", "fast", "cut", "immediate"},
		[]string{"cut", "fast", "immediate", "cut", "immediate", "fast", "cut", "immediate", "cut", "fast",
			"immediate", "cut", "fast", "cut", "immediate", "cut"})
	for _, f := range faults {
		sleep(ctx, time.Duration(Pick(params, 1000, 3000)+rng.IntN(Pick(params, 2500, 9000)))*time.Millisecond)
		switch f {
		case "cut":
			n := proxy.Cut()
			logf(t, "reset %d connections of the bridge", n)
		default:
			if err := pg.Restart(f); err != nil {
				t.Fatalf("restarting postgres (%s): %v\n%s", f, err, pg.Log())
			}
			logf(t, "postgres restarted (%s)", f)
		}
	}
	wait()
	logf(t, "workload done: %d changes, %d transactions looked up after an unknown outcome", r.Work.Committed(), r.Work.Ambiguous())
	r.finish(b, Pick(params, 2*time.Minute, 5*time.Minute))
	if err := stopSupervising(); err != nil {
		t.Error(err)
	}
}

// superviseFencedExits restarts b when it exits as a fenced leader: one
// whose lock connection broke while its records waited for Kinesis cannot
// send them any more and exits (see sources/postgres/fence.go); its
// supervisor restarts it, and the slot still holds everything. Any other
// exit fails the test.
func superviseFencedExits(b *Bridge) (stop func() error) {
	return b.Supervise(func(code int, log string) bool {
		return code == 1 && strings.Contains(lastLogLine(log), "records of a lost leadership are stuck in the sink")
	})
}

// TestPostgresSilentNetwork freezes the network between the bridge and
// PostgreSQL under load: the connections stay open but nothing crosses
// them, not even a reset, and new ones go unanswered. The bridge must
// notice the silence on its own, say it is disconnected without exiting
// (or exit only as a fenced leader, to be restarted), and once the
// network is back deliver everything in order.
func TestPostgresSilentNetwork(t *testing.T) {
	const name = "postgres network silent"
	t.Parallel()
	// The server's own timeout shortens the status interval the bridge
	// derives its silence limit from (3 intervals + 10 s): 25 s here.
	pg := privatePostgres(t, map[string]string{"wal_sender_timeout": "15s"})
	kin := testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	r.Work.Changes = Pick(params, 2000, 10000)
	r.Work.TxPerSecond = 30
	proxy, err := NewProxy(fmt.Sprintf("127.0.0.1:%d", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	b := NewBridge(t, r.env(fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", proxy.Addr, r.DB), r.Kinesis)...)
	b.Start()
	waitStreaming(t, b)
	stopSupervising := superviseFencedExits(b)
	defer stopSupervising()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
	sleep(ctx, 3*time.Second)
	proxy.SetFrozen(true)
	frozeAt := time.Now()
	logf(t, "network to postgres frozen")
	waitDegraded(t, b, "disconnected", 45*time.Second)
	logf(t, "the bridge reported itself disconnected %s into the silence", time.Since(frozeAt).Round(time.Second))
	sleep(ctx, 5*time.Second)
	proxy.SetFrozen(false)
	logf(t, "network to postgres back after %s", time.Since(frozeAt).Round(time.Second))
	wait()
	r.finish(b, Pick(params, 2*time.Minute, 5*time.Minute))
	if err := stopSupervising(); err != nil {
		t.Error(err)
	}
}
