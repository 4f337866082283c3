package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

// latencyWindow is one latency repetition.
type latencyWindow struct {
	latencySummary
	Rate float64 `json:"changes_per_second"`
}

// latencyPhase runs the bridge with default settings on a new slot while
// changes are committed at a steady rate, and reads commit-to-accepted
// latency from the endpoint in consecutive windows after a warm-up.
func (b *bench) latencyPhase(ctx context.Context) error {
	const slot = "bench_latency"
	// The load updates existing rows (the backlog's, or these).
	if _, err := b.conn.Exec(ctx, `INSERT INTO bench_items `+rowSelect+`(0, $1) g ON CONFLICT DO NOTHING`, distinctKeys-1); err != nil {
		return err
	}
	ep, err := b.startEndpoint("latency", "-latency")
	if err != nil {
		return err
	}
	defer ep.stop(syscall.SIGTERM, 5*time.Second)
	br, err := b.startBridge("latency", false, append([]string{"AWS_ENDPOINT_URL_KINESIS=" + ep.URL}, b.pgEnv(slot, "false")...)...)
	if err != nil {
		return err
	}
	defer br.shutdown(30 * time.Second)
	if err := waitHTTP200(ctx, "http://"+br.httpAddr+"/readyz", br.child, time.Minute); err != nil {
		return err
	}
	gen, err := pgx.Connect(ctx, b.pg.URL(database))
	if err != nil {
		return err
	}
	defer gen.Close(context.Background())
	genCtx, stopGen := context.WithCancel(ctx)
	type genResult struct {
		n   int
		err error
	}
	genDone := make(chan genResult, 1)
	go func() {
		n, err := steadyLoad(genCtx, gen, b.opts.latencyRate, 5)
		genDone <- genResult{n, err}
	}()
	defer stopGen()
	b.logf("latency: %d changes/s in 5-row transactions; %s warm-up, then %d windows of %s", b.opts.latencyRate, b.opts.latencyWarmup, b.opts.reps, b.opts.latencyWindow)
	if err := backoff.Wait(ctx, b.opts.latencyWarmup); err != nil {
		return err
	}
	if _, err := ep.latency(true); err != nil {
		return err
	}
	cpu0, err := readProc(br.pid())
	if err != nil {
		return err
	}
	var windows []latencyWindow
	samples := 0
	for i := range b.opts.reps {
		t := time.Now()
		if err := backoff.Wait(ctx, b.opts.latencyWindow); err != nil {
			return err
		}
		s, err := ep.latency(true)
		if err != nil {
			return err
		}
		if s.N == 0 || s.Bad > 0 {
			return fmt.Errorf("latency window %d: %d samples, %d envelopes without a time\n%s", i+1, s.N, s.Bad, br.logTail(20))
		}
		w := latencyWindow{latencySummary: s, Rate: float64(s.N) / time.Since(t).Seconds()}
		windows = append(windows, w)
		samples += s.N
		b.logf("latency #%d: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d changes (%.0f/s)", i+1, s.P50, s.P99, s.Max, s.N, w.Rate)
		if !br.running() {
			return fmt.Errorf("cdcbridge exited: %s", br.logTail(20))
		}
	}
	cpu1, err := readProc(br.pid())
	if err != nil {
		return err
	}
	stopGen()
	if g := <-genDone; g.err != nil {
		return fmt.Errorf("load generator: %w", g.err)
	}
	b.runs["latency"] = windows
	b.figs["latency_p50_ms"] = newFigure("ms", collect(windows, func(w latencyWindow) float64 { return w.P50 }))
	b.figs["latency_p99_ms"] = newFigure("ms", collect(windows, func(w latencyWindow) float64 { return w.P99 }))
	b.figs["latency_max_ms"] = newFigure("ms", collect(windows, func(w latencyWindow) float64 { return w.Max }))
	b.figs["latency_rate"] = newFigure("changes/s", collect(windows, func(w latencyWindow) float64 { return w.Rate }))
	if samples > 0 {
		v := (cpu1.CPUSeconds - cpu0.CPUSeconds) / float64(samples) * 100_000
		b.figs["latency_cpu_s_per_100k"] = newFigure("CPU seconds per 100,000 changes", []float64{v})
	}
	b.figs["latency_peak_rss_mib"] = newFigure("MiB", []float64{float64(cpu1.PeakRSS) / (1 << 20)})
	br.shutdown(30 * time.Second)
	return dropSlot(ctx, b.conn, slot)
}
