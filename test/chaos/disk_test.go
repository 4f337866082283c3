package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

// insertOversize inserts a row whose value is over the stream's 1 MiB
// record limit and logs it: it must reach the dead-letter directory, with
// a placeholder on the stream.
func insertOversize(t *testing.T, r *pgRig, id int64, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, r.PG.URL(r.DB))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	pad := strings.Repeat("x", size)
	if _, err := conn.Exec(ctx, `INSERT INTO items (id, ver, pad) VALUES ($1, 1, $2)`, id, pad); err != nil {
		t.Fatal(err)
	}
	r.Log.Add(verify.Change{Table: pgTable, Key: pgKey(id), Op: "insert", Ver: 1, Digest: verify.PayloadDigest(pad), At: time.Now()})
	r.Work.touched.Store(id, struct{}{})
}

// expectFailure waits for the bridge to stop on its own with a non-zero
// status and a log that names the problem.
func expectFailure(t *testing.T, b *Bridge, within time.Duration, words ...string) {
	t.Helper()
	code, ok := b.WaitExit(within)
	if !ok {
		t.Fatalf("cdcbridge still runs %s into the fault; want it to stop with an error\n%s", within, b.LogTail(30))
	}
	if code == 0 {
		t.Fatalf("cdcbridge exited 0 under the fault; want non-zero\n%s", b.LogTail(30))
	}
	if log := strings.ToLower(b.LogTail(10)); !contains(log, words...) {
		t.Errorf("the last log lines do not name the problem (%q):\n%s", words, b.LogTail(10))
	}
	logf(t, "cdcbridge stopped with status %d: %s", code, lastLine(b.Log()))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// noPlaceholderFor fails when the stream holds a placeholder for id: the
// bridge must not report a dead-lettered event accepted when its
// dead-letter line could not be written.
func noPlaceholderFor(t *testing.T, r *pgRig, id int64) {
	t.Helper()
	recs, err := verify.ReadAll(context.Background(), r.Kin.Client(), r.Stream)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if rec.Env != nil && rec.Env.IsPlaceholder() && string(rec.Env.Key) == pgKey(id) {
			t.Errorf("placeholder %s on the stream although its dead-letter line could not be written", rec.Env.ID)
		}
	}
}

// TestDiskDLQ makes the dead-letter directory unwritable, then full, each
// time before an oversize row arrives: the bridge must stop with a clear
// error instead of acknowledging the row, a start while the directory is
// unwritable must fail at once, and a restart after the fault is mended
// must lose nothing.
//
// Each fault is set up before the process opens its dead-letter file: a
// file already open stays writable when its directory is moved away, and
// a tmpfs mounted over the directory does not hide it.
func TestDiskDLQ(t *testing.T) {
	const name = "disk: dead-letter dir unwritable, full"
	t.Parallel()
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	r.Work.Changes = Pick(params, 1500, 6000)
	r.Work.TxPerSecond = 10
	b := NewBridge(t, r.env(pg.URL(r.DB), r.Kinesis)...)
	b.Start()
	waitStreaming(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })

	// Unwritable: the directory replaced by a file while the bridge runs.
	sleep(ctx, 2*time.Second)
	restore, err := BreakDir(r.DLQDir)
	if err != nil {
		t.Fatal(err)
	}
	insertOversize(t, r, 1_000_001, 2<<20)
	expectFailure(t, b, 2*time.Minute, "dead-letter")
	noPlaceholderFor(t, r, 1_000_001)
	b.Start()
	expectFailure(t, b, time.Minute, "dead-letter", "dlq")
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	b.Start()
	waitStreaming(t, b)
	sleep(ctx, 3*time.Second)
	if code, _ := b.Term(30 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, b.LogTail(20))
	}

	// Full: a 64 KiB tmpfs over the directory, or a 64 KiB file size limit.
	unmount, err := FullDir(r.DLQDir, 64<<10)
	limited := false
	switch {
	case errors.Is(err, ErrCannotMount):
		logf(t, "%v; a file size limit on the bridge stands in for a full disk", err)
		limited = true
	case err != nil:
		t.Fatal(err)
	default:
		t.Cleanup(func() {
			if unmount != nil {
				unmount()
			}
		})
		if err := CheckFull(r.DLQDir, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	b.Start()
	if limited {
		if err := LimitFileSize(b.Pid(), 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	waitStreaming(t, b)
	insertOversize(t, r, 1_000_002, 2<<20)
	expectFailure(t, b, 2*time.Minute, "dead-letter")
	noPlaceholderFor(t, r, 1_000_002)
	if !limited {
		if err := unmount(); err != nil {
			t.Fatal(err)
		}
		unmount = nil
	}
	b.Start() // a new process: no file size limit
	waitStreaming(t, b)
	wait()
	res := r.finish(b, Pick(params, 2*time.Minute, 4*time.Minute))
	if res.Placeholders < 2 {
		t.Errorf("%d placeholders on the stream, want one per oversize row", res.Placeholders)
	}
}

// TestDiskCheckpoint makes the checkpoint file's directory unwritable
// under load, for the Postgres and the DynamoDB source. The bridge must
// report itself degraded, and stop with a clear error once checkpoints
// have failed for the sources' limit (2 minutes: the long form waits for
// it, the short form restarts the bridge after the degraded report); a
// start while the fault lasts must fail at once, and a restart after the
// fault is mended must lose nothing.
func TestDiskCheckpoint(t *testing.T) {
	t.Parallel()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		const name = "disk: checkpoint dir unwritable (postgres)"
		pg, kin := testenv.PG(t), testenv.Kinesalite(t)
		r := newPGRig(t, name, pg, kin)
		r.Work.Changes = Pick(params, 1500, 12000)
		r.Work.TxPerSecond = Pick(params, 10.0, 15.0)
		b := NewBridge(t, r.env(pg.URL(r.DB), r.Kinesis)...)
		b.Start()
		waitStreaming(t, b)
		checkpointFault(t, r.rig, b, func(ctx context.Context) error { return r.Work.Run(ctx) })
	})
	t.Run("dynamodb", func(t *testing.T) {
		t.Parallel()
		const name = "disk: checkpoint dir unwritable (dynamodb)"
		ddb, kin := testenv.DynamoDB(t), testenv.Kinesalite(t)
		r := newDDBRig(t, name, ddb, kin)
		r.Work.Changes = Pick(params, 600, 3000)
		r.Work.TxPerSecond = Pick(params, 5.0, 8.0)
		b := NewBridge(t, r.env(ddb.Endpoint, r.Kinesis)...)
		b.Start()
		b.WaitReady(90 * time.Second)
		checkpointFault(t, r.rig, b, func(ctx context.Context) error { return r.Work.Run(ctx) })
	})
}

func checkpointFault(t *testing.T, r *rig, b *Bridge, work func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, "workload", func() error { return work(ctx) })
	sleep(ctx, 3*time.Second)
	dir := filepath.Dir(r.CPPath)
	restore, err := BreakDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	logf(t, "checkpoint directory replaced by a file")
	waitDegraded(t, b, "checkpoint", time.Minute)
	if params.Long {
		expectFailure(t, b, 4*time.Minute, "checkpoint")
	} else {
		b.Kill()
	}
	b.Start()
	expectFailure(t, b, time.Minute, "checkpoint")
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	logf(t, "checkpoint directory back")
	b.Start()
	b.WaitReady(90 * time.Second)
	wait()
	r.finish(b, Pick(params, 2*time.Minute, 4*time.Minute))
}

// waitDegraded waits until /status lists a degraded reason containing word.
// A supervised bridge may exit and be restarted meanwhile.
func waitDegraded(t *testing.T, b *Bridge, word string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if st, err := b.Status(); err == nil && degradedMentions(st, word) {
			logf(t, "/status reports the bridge degraded (%s)", word)
			return
		}
		select {
		case <-b.Exited():
			if !b.Supervised() {
				t.Fatalf("cdcbridge exited (code %d) while waiting for a degraded report\n%s", b.ExitCode(), b.LogTail(20))
			}
			time.Sleep(250 * time.Millisecond) // its supervisor restarts it
		case <-time.After(250 * time.Millisecond):
		}
	}
	t.Fatalf("/status did not report the bridge degraded (%s) within %s", word, timeout)
}

// degradedMentions looks for word in any "degraded" list of a status.
func degradedMentions(v any, word string) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if k == "degraded" {
				if js, _ := json.Marshal(x); strings.Contains(strings.ToLower(string(js)), word) {
					return true
				}
			}
			if degradedMentions(x, word) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if degradedMentions(x, word) {
				return true
			}
		}
	}
	return false
}
