package chaos

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/internal/testenv"
)

// TestPostgresRestart restarts PostgreSQL under load (fast and immediate
// shutdown: the latter is a crash, and the slot's confirmed position falls
// back to what its last checkpoint saved) and cuts the bridge's
// connections, the replication connection among them, with a TCP reset.
// The bridge must ride through every one without exiting; KPL aggregation
// is on, so the stream is also read through the verifier's own
// de-aggregation.
func TestPostgresRestart(t *testing.T) {
	const name = "postgres restarts"
	pg, err := testenv.StartPostgres(testenv.PostgresOptions{})
	if err != nil {
		if os.Getenv("CI") == "" && testing.Short() {
			t.Skipf("postgres unavailable: %v", err)
		}
		t.Fatalf("postgres unavailable: %v", err)
	}
	t.Cleanup(func() { pg.Stop() })
	kin := testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	rng := params.Rand(name + "/faults")
	r.Work.Changes = Pick(params, 5000, 50000)
	r.Work.TxPerSecond = Pick(params, 50.0, 50.0)
	r.Work.LargeProb = 0.01
	r.Work.BigTxProb = Pick(params, 0.005, 0.003)
	r.Work.BigTxSize = Pick(params, [2]int{200, 800}, [2]int{1000, 4000})

	proxy, err := NewProxy(fmt.Sprintf("127.0.0.1:%d", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	bridgeURL := fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", proxy.Addr, r.DB)
	b := NewBridge(t, append(r.env(bridgeURL, kin.Endpoint), "CDCBRIDGE_KINESIS_AGGREGATE=true")...)
	b.Start()
	waitStreaming(t, b)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
	faults := Pick(params, []string{"cut", "fast", "cut", "immediate"},
		[]string{"cut", "fast", "immediate", "cut", "immediate", "fast", "cut", "immediate", "cut", "fast"})
	for _, f := range faults {
		select {
		case <-b.Exited():
			t.Fatalf("cdcbridge exited (code %d)\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(time.Duration(1000+rng.IntN(2500)) * time.Millisecond):
		}
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
	select {
	case <-b.Exited():
		t.Errorf("cdcbridge exited (code %d) after the faults", b.ExitCode())
	default:
	}
}
