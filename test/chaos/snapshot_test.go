package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

// snapshotFaults are heavy Kinesis faults: throttled and failed entries,
// failed requests and answers lost to connection resets.
var snapshotFaults = kinesisfake.Faults{
	ThrottleEntries: 0.30,
	FailEntries:     0.05,
	FailRequests:    0.02,
	LoseResponses:   0.02,
	LoseMode:        kinesisfake.Reset,
}

// snapshotRig is a Postgres rig whose table has rows before the bridge
// starts, a workload that changes them (updates, deletes, key changes) at
// about a thousand changes a second in the long form, and a fault-injecting
// Kinesis.
func snapshotRig(t *testing.T, name string, include func(id int64) bool) (*pgRig, *kinesisfake.Server, int) {
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	rows := Pick(params, 20000, 200000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.Work.Populate(ctx, rows, include); err != nil {
		t.Fatal(err)
	}
	r.Work.Changes = Pick(params, 6000, 120000)
	r.Work.TxPerSecond = Pick(params, 40.0, 110.0) // per worker: about 1,000 changes/s in all in the long form
	r.Work.ExistingShare = 0.5
	r.Work.RekeyProb = 0.1
	r.Work.HotRows = 60
	r.Work.LargeProb = 0.002
	r.Work.BigTxProb = 0.001
	r.Work.BigTxSize = [2]int{100, 300}
	fake := kinesisfake.New(kinesisfake.Options{Upstream: kin.Endpoint, Seed: params.Rand(name + "/kinesis").Uint64()})
	t.Cleanup(fake.Close)
	return r, fake, rows
}

// snapshotChunkRows is the scenarios' CDCBRIDGE_POSTGRES_SNAPSHOT_CHUNK_ROWS.
// A chunk's rows are all accepted before the next chunk goes out (so a
// kill reads at most one chunk again), and with a third of the entries
// failing, the last of a chunk's rows is accepted only after some seven
// attempts and their backoffs: several seconds per chunk, whatever its
// size. The short form's chunks are large enough for its table to be
// read in about ten.
func snapshotChunkRows() int { return Pick(params, 2000, 10000) }

// snapshotRunning reports whether the bridge's /status lists a snapshot
// that is not finished, and the rows its tables have delivered; ok is
// false until the status lists the scenario's snapshot.
func snapshotRunning(b *Bridge) (running bool, rows int64, ok bool) {
	st, err := b.Status()
	if err != nil {
		return false, 0, false
	}
	src, _ := st["source"].(map[string]any)
	snaps, _ := src["snapshots"].([]any)
	if len(snaps) == 0 {
		return false, 0, false // not listed yet: the source is starting
	}
	for _, s := range snaps {
		m, _ := s.(map[string]any)
		if fin, _ := m["finished"].(string); fin == "" {
			running = true
		}
		tables, _ := m["tables"].([]any)
		for _, tb := range tables {
			tm, _ := tb.(map[string]any)
			n, _ := tm["rows"].(float64)
			rows += int64(n)
		}
	}
	return running, rows, true
}

// waitSnapshotsDone waits until the bridge lists no unfinished snapshot.
func waitSnapshotsDone(t *testing.T, b *Bridge, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	deadline, report := start.Add(timeout), start.Add(15*time.Second)
	var rows int64
	for time.Now().Before(deadline) {
		running, n, ok := snapshotRunning(b)
		if ok && !running {
			logf(t, "snapshots done %s later", time.Since(start).Round(time.Second))
			return
		}
		if ok {
			rows = n
		}
		if time.Now().After(report) {
			logf(t, "snapshot still running: %d rows delivered", rows)
			report = report.Add(15 * time.Second)
		}
		select {
		case <-b.Exited():
			t.Fatalf("cdcbridge exited (code %d) before its snapshots were done\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(500 * time.Millisecond):
		}
	}
	t.Fatalf("snapshots not done after %s (%d rows delivered)\n%s", timeout, rows, b.LogTail(40))
}

// killDuringSnapshot kills the bridge n times at random moments while its
// snapshot runs, and returns how many kills found it running. Every other
// kill first waits (up to a minute) until the snapshot delivered a chunk
// since the restart, so that kills land all along the table, not only
// before its first chunk is accepted.
func killDuringSnapshot(t *testing.T, b *Bridge, rng *rand.Rand, n int, maxUp time.Duration) int {
	t.Helper()
	during := 0
	for i := range n {
		if i%2 == 1 {
			start := int64(-1)
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); sleep(context.Background(), 200*time.Millisecond) {
				running, rows, ok := snapshotRunning(b)
				if !ok {
					continue
				}
				if start < 0 {
					start = rows
				}
				if !running || rows > start {
					break
				}
			}
		}
		up := time.Duration(300+rng.IntN(int(maxUp/time.Millisecond))) * time.Millisecond
		select {
		case <-b.Exited():
			t.Fatalf("cdcbridge exited on its own (code %d)\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(up):
		}
		running, rows, _ := snapshotRunning(b)
		if running {
			during++
		}
		b.Kill()
		logf(t, "kill -9 #%d after %s up (snapshot running: %v, rows delivered: %d)", i+1, up, running, rows)
		sleep(context.Background(), time.Duration(rng.IntN(500))*time.Millisecond)
		b.Start()
		b.WaitReady(90 * time.Second)
	}
	return during
}

// checkReads holds the read events against the bound: every row read at
// most once, plus one chunk again per kill.
func checkReads(t *testing.T, name string, res verify.Result, kills, chunk int) {
	t.Helper()
	again := res.Reads - res.ReadRows
	logf(t, "%s: %d read events for %d rows (%d read again, bound %d: one chunk of %d per kill)", name, res.Reads, res.ReadRows, again, kills*chunk, chunk)
	if again > kills*chunk {
		t.Errorf("%s: %d rows read again after %d kills; at most one chunk (%d rows) per kill", name, again, kills, chunk)
	}
}

// TestSnapshotKill9Postgres: the initial snapshot of a table with rows,
// read while the table is being changed, Kinesis is faulty and the bridge
// is killed again and again. Nothing committed after the first start is
// missing, no row's events go back in its history (a read older than a
// change already delivered counts), the stream applied in order equals the
// table, and a kill costs at most one chunk read again.
func TestSnapshotKill9Postgres(t *testing.T) {
	const name = "snapshot kill -9 (postgres)"
	t.Parallel()
	r, fake, _ := snapshotRig(t, name, nil)
	chunk := snapshotChunkRows()
	b := NewBridge(t, append(r.env(r.PG.URL(r.DB), fake.URL),
		"CDCBRIDGE_POSTGRES_SNAPSHOT_CHUNK_ROWS="+strconv.Itoa(chunk),
		"CDCBRIDGE_KINESIS_REQUEST_TIMEOUT=5s")...)
	fake.SetFaults(snapshotFaults)
	b.Start()
	waitStreaming(t, b)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
	kills := Pick(params, 4, 10)
	during := killDuringSnapshot(t, b, params.Rand(name+"/kills"), kills, Pick(params, 2*time.Second, 6*time.Second))
	if during == 0 {
		t.Errorf("%s: the snapshot was over before the first kill: the scenario tests nothing", name)
	}
	wait()
	logf(t, "workload done: %d changes, %d ambiguous transactions; %d of %d kills during the snapshot", r.Work.Committed(), r.Work.Ambiguous(), during, kills)
	waitSnapshotsDone(t, b, Pick(params, 6*time.Minute, 15*time.Minute))
	res := r.finish(b, Pick(params, 3*time.Minute, 10*time.Minute))
	checkReads(t, name, res, kills, chunk)
}

// TestSnapshotWherePostgres: `cdcbridge snapshot --where` asked while the
// bridge streams, with the same kills, writes and faults: only the
// matching rows are read, with the same properties.
func TestSnapshotWherePostgres(t *testing.T) {
	const name = "snapshot --where, kill -9 (postgres)"
	t.Parallel()
	match := func(id int64) bool { return id%3 == 0 }
	r, fake, _ := snapshotRig(t, name, match)
	chunk := snapshotChunkRows()
	env := append(r.env(r.PG.URL(r.DB), fake.URL),
		"CDCBRIDGE_POSTGRES_SNAPSHOT=never",
		"CDCBRIDGE_POSTGRES_SNAPSHOT_CHUNK_ROWS="+strconv.Itoa(chunk),
		"CDCBRIDGE_KINESIS_REQUEST_TIMEOUT=5s")
	b := NewBridge(t, env...)
	fake.SetFaults(snapshotFaults)
	b.Start()
	waitStreaming(t, b)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })

	// Bad requests are refused with the reason, and start nothing.
	for _, bad := range [][]string{
		{"--where", "no_such_column = 1", "public.items"},
		{"--where", "id = ", "public.items"},
		{"public.no_such_table"},
		{"public.wl_tx"}, // not published
	} {
		out, code := runSnapshotCommand(t, env, bad...)
		if code == 0 {
			t.Errorf("cdcbridge snapshot %q succeeded:\n%s", bad, out)
		}
		logf(t, "cdcbridge snapshot %q: exit %d: %s", bad, code, strings.TrimSpace(out))
	}
	out, code := runSnapshotCommand(t, env, "--where", "id % 3 = 0", "public.items")
	if code != 0 {
		t.Fatalf("cdcbridge snapshot --where: exit %d\n%s", code, out)
	}
	logf(t, "cdcbridge snapshot: %s", strings.TrimSpace(out))
	kills := Pick(params, 4, 10)
	during := killDuringSnapshot(t, b, params.Rand(name+"/kills"), kills, Pick(params, 2*time.Second, 6*time.Second))
	if during == 0 {
		t.Errorf("%s: the snapshot was over before the first kill: the scenario tests nothing", name)
	}
	wait()
	waitSnapshotsDone(t, b, Pick(params, 6*time.Minute, 15*time.Minute))
	status, _ := runSnapshotCommand(t, env, "--status")
	logf(t, "cdcbridge snapshot --status:\n%s", status)
	if !strings.Contains(status, "public.items") || !strings.Contains(status, "done") {
		t.Errorf("--status does not show the finished table:\n%s", status)
	}
	res := r.finish(b, Pick(params, 3*time.Minute, 10*time.Minute))
	checkReads(t, name, res, kills, chunk)
	// Only matching rows were read.
	recs, err := verify.ReadAll(context.Background(), r.Kin.Client(), r.Stream)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, rec := range recs {
		if rec.Env == nil || rec.Env.Op != "read" {
			continue
		}
		var id int64
		if _, err := fmt.Sscanf(string(rec.Env.Key), `{"id":%d}`, &id); err != nil || !match(id) {
			bad++
			if bad <= 5 {
				t.Errorf("read of %s, which does not match the condition", rec.Env.Key)
			}
		}
	}
	if res.Reads == 0 {
		t.Errorf("the snapshot read nothing")
	}
}

// runSnapshotCommand runs `cdcbridge snapshot args...` with a bridge's
// settings and returns its output and exit code.
func runSnapshotCommand(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(Binary(t), append([]string{"snapshot"}, args...)...)
	cmd.Env = append(BaseEnv(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		t.Fatalf("running cdcbridge snapshot: %v", err)
	}
	return string(out), 0
}
