package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// hotDelay is the round trip the null endpoint adds in the hot-key phase:
// about what a PutRecords call to a Kinesis region takes.
const hotDelay = 20 * time.Millisecond

// hotPlainWindow bounds the run without aggregation: a hot key moves one
// record per round trip there, so draining the backlog would take most of
// an hour; its rate is what arrived within the window.
const hotPlainWindow = 30 * time.Second

// hotKeyPhase commits opts.hotChanges changes, half of them updates of one
// row and half updates of other rows each changed once or twice, behind a
// base slot, and drains copies of it into a null endpoint that adds
// hotDelay to every request and counts per-row order violations: with
// AGGREGATE=hot (gzipped and not) and =true to the end, without
// aggregation for hotPlainWindow. A run whose endpoint saw a row's changes
// out of order fails the benchmark.
//
// One row's records all go to the shard its key hashes to, which takes
// 1 MiB/s: the hot row's bytes as sent move at most at the bridge's
// pacing of that shard (CDCBRIDGE_KINESIS_SHARD_HEADROOM), whatever the
// mode; compression is what puts more of its changes into those bytes.
func (b *bench) hotKeyPhase(ctx context.Context) error {
	const base = "bench_hot_base"
	// The rows exist when the throughput phase ran; otherwise insert them
	// now, before the slot.
	if _, err := b.conn.Exec(ctx, `INSERT INTO bench_items `+rowSelect+`(0, $1) g ON CONFLICT DO NOTHING`, distinctKeys-1); err != nil {
		return fmt.Errorf("hot-key rows: %w", err)
	}
	if err := createSlot(ctx, b.conn, base); err != nil {
		return err
	}
	t0 := time.Now()
	if err := loadHotKey(ctx, b.conn, b.opts.hotChanges); err != nil {
		return fmt.Errorf("hot-key backlog: %w", err)
	}
	want := int64(b.opts.hotChanges / 100 * 100)
	b.logf("hot-key backlog committed in %.1fs: %d changes in %d transactions, half of them on one row",
		time.Since(t0).Seconds(), want, want/100)
	endpoint := []string{"-delay", hotDelay.String(), "-check-order"}
	n := 0
	run := func(mode string, window time.Duration, extra []string) (throughputRun, error) {
		n++
		slot := fmt.Sprintf("bench_hot_%d", n)
		if err := copySlot(ctx, b.conn, base, slot); err != nil {
			return throughputRun{}, err
		}
		r, err := b.runThroughput(ctx, runSpec{name: "hot-" + mode, env: b.pgEnv(slot, mode, extra...), want: want, slot: slot,
			endpoint: endpoint, window: window})
		if err != nil {
			return r, err
		}
		return r, dropSlot(ctx, b.conn, slot)
	}
	// AGGREGATE=true runs once: like hot, it is bound by the hot row's
	// shard (two minutes a run), and hot is the mode this phase is for.
	configs := []struct {
		key, mode, label string
		window           time.Duration
		once             bool
		extra            []string
	}{
		{"hot_gzip", "hot", "hot key, AGGREGATE=hot, AGGREGATE_COMPRESSION=gzip", 0, false, []string{"CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip"}},
		{"hot_hot", "hot", "hot key, AGGREGATE=hot", 0, false, nil},
		{"hot_agg", "true", "hot key, AGGREGATE=true", 0, true, nil},
		{"hot_plain", "false", fmt.Sprintf("hot key, AGGREGATE=false (first %s)", hotPlainWindow), hotPlainWindow, false, nil},
	}
	runs := map[string][]throughputRun{}
	for i := range b.opts.reps {
		for _, c := range configs {
			if c.once && i > 0 {
				continue
			}
			r, err := run(c.mode, c.window, c.extra)
			if err != nil {
				return err
			}
			b.printRun(c.label, i, r)
			b.logf("  the hot row: %.0f changes/s (%.2f MiB/s of envelopes); its shard took %.2f MiB/s as sent; %d aggregates, %d duplicates, %d order violations",
				hotRowRate(r), hotRowMiB(r), topShardMiB(r), r.Aggregates, r.Duplicates, r.OrderViolations)
			runs[c.key] = append(runs[c.key], r)
		}
	}
	for _, c := range configs {
		b.runs[c.key] = runs[c.key]
		b.throughputFigures(c.key, runs[c.key], nil)
		b.figs[c.key+"_row_changes_per_s"] = newFigure("changes/s", collect(runs[c.key], hotRowRate))
		b.figs[c.key+"_row_mib_per_s"] = newFigure("MiB/s", collect(runs[c.key], hotRowMiB))
		b.figs[c.key+"_shard_mib_per_s"] = newFigure("MiB/s", collect(runs[c.key], topShardMiB))
		b.figs[c.key+"_order_violations"] = newFigure("changes of a row out of order", collect(runs[c.key], func(r throughputRun) float64 { return float64(r.OrderViolations) }))
	}
	return dropSlot(ctx, b.conn, base)
}

// loadHotKey commits changes/100 transactions of 50 updates of row 0
// alternating with 50 updates of other rows, in one server-side loop.
func loadHotKey(ctx context.Context, conn *pgx.Conn, changes int) error {
	_, err := conn.Exec(ctx, fmt.Sprintf(`DO $$
BEGIN
	FOR t IN 0..%d LOOP
		FOR i IN 1..50 LOOP
			UPDATE bench_items SET amount = amount + 1, updated_at = now() WHERE id = 0;
			UPDATE bench_items SET amount = amount + 1, updated_at = now() WHERE id = 1 + (t * 50 + i) %% %d;
		END LOOP;
		COMMIT;
	END LOOP;
END $$`, changes/100-1, distinctKeys-1))
	return err
}

// hotRowRate is the hot row's own rate: its distinct changes per second.
func hotRowRate(r throughputRun) float64 { return float64(r.TopKeyRecords) / r.Seconds }

// hotRowMiB is the hot row's envelope bytes per second, all of which go
// to one shard: as they are, or compressed with AGGREGATE_COMPRESSION.
func hotRowMiB(r throughputRun) float64 {
	if r.UserRecords == 0 {
		return 0
	}
	return hotRowRate(r) * float64(r.UserBytes) / float64(r.UserRecords) / (1 << 20)
}

// topShardMiB is what the busiest shard (the hot row's) took per second,
// as sent: Kinesis takes 1 MiB/s per shard, and the bridge paces itself
// to CDCBRIDGE_KINESIS_SHARD_HEADROOM of that.
func topShardMiB(r throughputRun) float64 { return float64(r.TopShardBytes) / r.Seconds / (1 << 20) }
