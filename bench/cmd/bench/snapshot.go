package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

const (
	snapTable       = "bench_snap"
	snapPublication = "bench_snap"
	snapLoadRate    = 1_000 // changes/s committed during the snapshots with load
)

// snapshotRun is one on-demand snapshot of bench_snap.
type snapshotRun struct {
	Rows          int64   `json:"rows"`
	Seconds       float64 `json:"seconds"` // from the request's commit to the job's end in /status
	RowsPerSecond float64 `json:"rows_per_second"`
	// With load: the changes committed meanwhile, commit to accepted.
	Load *latencySummary `json:"load,omitempty"`
}

// snapshotPhase fills bench_snap with snapshotRows rows of about 200
// bytes and runs one bridge with default settings (the snapshot chunk
// size included) on a new slot, its publication holding bench_snap and
// bench_items, into a null Kinesis that records commit-to-accepted
// latency of changes (reads are not counted). Each repetition:
//
//  1. `cdcbridge snapshot public.bench_snap` with nothing else going on:
//     rows/s from the request to the job's end in /status;
//  2. 1,000 changes/s of updates to bench_items for latencyWindow, without
//     a snapshot: the latency baseline;
//  3. the same snapshot again while the same load goes on: rows/s, and
//     the latency of the changes committed during it.
//
// The bridge's peak RSS covers all of it.
func (b *bench) snapshotPhase(ctx context.Context) error {
	const slot = "bench_snapshot"
	rows := b.opts.snapshotRows
	b.logf("snapshot: filling %s with %d rows", snapTable, rows)
	if err := execAll(ctx, b.conn,
		`DROP TABLE IF EXISTS `+snapTable,
		`CREATE TABLE `+snapTable+` (LIKE bench_items INCLUDING ALL)`,
		fmt.Sprintf(`INSERT INTO %s %s(1, %d) g`, snapTable, rowSelect, rows),
		`ANALYZE `+snapTable,
		`DROP PUBLICATION IF EXISTS `+snapPublication,
		`CREATE PUBLICATION `+snapPublication+` FOR TABLE `+snapTable+`, bench_items`,
	); err != nil {
		return err
	}
	if _, err := b.conn.Exec(ctx, `INSERT INTO bench_items `+rowSelect+`(0, $1) g ON CONFLICT DO NOTHING`, distinctKeys-1); err != nil {
		return err
	}
	ep, err := b.startEndpoint("snapshot", "-latency")
	if err != nil {
		return err
	}
	defer ep.stop(syscall.SIGTERM, 5*time.Second)
	env := append([]string{"AWS_ENDPOINT_URL_KINESIS=" + ep.URL}, b.pgEnv(slot, "false")...)
	env = append(env, "CDCBRIDGE_POSTGRES_PUBLICATION="+snapPublication) // the later one wins
	br, err := b.startBridge("snapshot", false, env...)
	if err != nil {
		return err
	}
	defer br.shutdown(30 * time.Second)
	if err := waitHTTP200(ctx, "http://"+br.httpAddr+"/readyz", br.child, time.Minute); err != nil {
		return err
	}

	var quiet, loaded []snapshotRun
	var baseline []latencySummary
	for i := range b.opts.reps {
		r, err := b.timedSnapshot(ctx, br, rows)
		if err != nil {
			return err
		}
		quiet = append(quiet, r)
		b.logf("snapshot #%d: %d rows in %.2fs: %.0f rows/s", i+1, r.Rows, r.Seconds, r.RowsPerSecond)

		var base latencySummary
		err = withLoad(ctx, b.pg.URL(database), func() error {
			if err := backoff.Wait(ctx, b.opts.latencyWarmup); err != nil {
				return err
			}
			if _, err := ep.latency(true); err != nil {
				return err
			}
			if err := backoff.Wait(ctx, b.opts.latencyWindow); err != nil {
				return err
			}
			base, err = ep.latency(true)
			if err != nil {
				return err
			}
			if base.N == 0 || base.Bad > 0 {
				return fmt.Errorf("baseline: %d samples, %d envelopes without a time", base.N, base.Bad)
			}
			baseline = append(baseline, base)
			r, err = b.timedSnapshot(ctx, br, rows)
			if err != nil {
				return err
			}
			s, err := ep.latency(true)
			if err != nil {
				return err
			}
			if s.N == 0 || s.Bad > 0 {
				return fmt.Errorf("during the snapshot: %d samples, %d envelopes without a time", s.N, s.Bad)
			}
			r.Load = &s
			loaded = append(loaded, r)
			return nil
		})
		if err != nil {
			return fmt.Errorf("snapshot with load: %w\n%s", err, br.logTail(20))
		}
		b.logf("snapshot #%d at %d changes/s: %.0f rows/s; changes p50 %.1f ms, p99 %.1f ms (%d changes), without a snapshot p99 %.1f ms (%d changes)",
			i+1, snapLoadRate, r.RowsPerSecond, r.Load.P50, r.Load.P99, r.Load.N, base.P99, base.N)
	}
	st, err := readProc(br.pid())
	if err != nil {
		return err
	}
	b.runs["snapshot"] = map[string]any{"quiet": quiet, "with_load": loaded, "baseline": baseline}
	b.figs["snapshot_rows_per_s"] = newFigure("rows/s", collect(quiet, func(r snapshotRun) float64 { return r.RowsPerSecond }))
	b.figs["snapshot_load_rows_per_s"] = newFigure("rows/s", collect(loaded, func(r snapshotRun) float64 { return r.RowsPerSecond }))
	b.figs["snapshot_load_p99_ms"] = newFigure("ms", collect(loaded, func(r snapshotRun) float64 { return r.Load.P99 }))
	b.figs["snapshot_baseline_p99_ms"] = newFigure("ms", collect(baseline, func(s latencySummary) float64 { return s.P99 }))
	ratios := make([]float64, len(loaded))
	for i := range loaded {
		ratios[i] = loaded[i].Load.P99 / baseline[i].P99
	}
	b.figs["snapshot_p99_ratio"] = newFigure("", ratios)
	b.figs["snapshot_peak_rss_mib"] = newFigure("MiB", []float64{float64(st.PeakRSS) / (1 << 20)})
	br.shutdown(30 * time.Second)
	if err := dropSlot(ctx, b.conn, slot); err != nil {
		return err
	}
	return execAll(ctx, b.conn, `DROP PUBLICATION `+snapPublication, `DROP TABLE `+snapTable)
}

// withLoad runs f while snapLoadRate changes/s are committed, on a
// connection of its own (stopping the load cancels a statement, which
// closes the connection).
func withLoad(ctx context.Context, url string, f func() error) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	genCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := steadyLoad(genCtx, conn, snapLoadRate, 5)
		done <- err
	}()
	err = f()
	stop()
	if gerr := <-done; gerr != nil && err == nil {
		err = fmt.Errorf("load generator: %w", gerr)
	}
	return err
}

var snapshotIDRe = regexp.MustCompile(`snapshot (\S+) requested`)

// timedSnapshot asks the bridge for a snapshot of bench_snap with the
// cdcbridge snapshot command and waits until /status shows it finished.
func (b *bench) timedSnapshot(ctx context.Context, br *bridge, rows int) (snapshotRun, error) {
	// The bridge is ready before its slot is created; until then the
	// command refuses (a request before the slot would never be read).
	var out []byte
	var start time.Time
	for tries := 0; ; tries++ {
		cmd := exec.CommandContext(ctx, b.bin, "snapshot", "public."+snapTable)
		cmd.Env = br.env
		var err error
		out, err = cmd.CombinedOutput()
		start = time.Now()
		if err == nil {
			break
		}
		if tries < 300 && (strings.Contains(string(out), "does not exist") || strings.Contains(string(out), "still being created")) {
			if err := backoff.Wait(ctx, 100*time.Millisecond); err != nil {
				return snapshotRun{}, err
			}
			continue
		}
		return snapshotRun{}, fmt.Errorf("cdcbridge snapshot: %v\n%s", err, out)
	}
	m := snapshotIDRe.FindSubmatch(out)
	if m == nil {
		return snapshotRun{}, fmt.Errorf("cdcbridge snapshot printed no id:\n%s", out)
	}
	id := string(m[1])
	deadline := start.Add(10 * time.Minute)
	for {
		job, err := br.snapshotJob(id)
		if err != nil {
			return snapshotRun{}, err
		}
		if job != nil && job.Finished != "" {
			elapsed := time.Since(start).Seconds()
			var n int64
			for _, t := range job.Tables {
				if t.State != "done" {
					return snapshotRun{}, fmt.Errorf("snapshot %s: %s is %s: %s", id, t.Table, t.State, t.Note)
				}
				n += t.Rows
			}
			if n != int64(rows) {
				return snapshotRun{}, fmt.Errorf("snapshot %s read %d rows of %d", id, n, rows)
			}
			return snapshotRun{Rows: n, Seconds: elapsed, RowsPerSecond: float64(n) / elapsed}, nil
		}
		if !br.running() {
			return snapshotRun{}, fmt.Errorf("cdcbridge exited during snapshot %s: %s", id, br.logTail(20))
		}
		if time.Now().After(deadline) {
			return snapshotRun{}, fmt.Errorf("snapshot %s not finished after 10 minutes", id)
		}
		if err := backoff.Wait(ctx, 20*time.Millisecond); err != nil {
			return snapshotRun{}, err
		}
	}
}

// statusSnapshot is the part of a snapshot in /status the benchmark reads.
type statusSnapshot struct {
	ID       string `json:"id"`
	Finished string `json:"finished"`
	Tables   []struct {
		Table string `json:"table"`
		State string `json:"state"`
		Rows  int64  `json:"rows"`
		Note  string `json:"note"`
	} `json:"tables"`
}

// snapshotJob returns the snapshot id from /status, nil while the bridge
// has not seen its request yet.
func (br *bridge) snapshotJob(id string) (*statusSnapshot, error) {
	resp, err := http.Get("http://" + br.httpAddr + "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st struct {
		Source struct {
			Snapshots []statusSnapshot `json:"snapshots"`
		} `json:"source"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("/status: %w", err)
	}
	for i := range st.Source.Snapshots {
		if strings.EqualFold(st.Source.Snapshots[i].ID, id) {
			return &st.Source.Snapshots[i], nil
		}
	}
	return nil, nil
}
