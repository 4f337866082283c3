// Command bench measures cdcbridge end to end: it is what `make bench`
// runs. It starts a throwaway PostgreSQL 15, commits a backlog of changes,
// and times, each over several repetitions (min/median/max):
//
//  1. the ceiling: pg_recvlogical draining a copy of the bridge's slot with
//     pgoutput into /dev/null;
//  2. the bin/cdcbridge binary draining another copy into a null Kinesis
//     endpoint (test/kinesisfake/cmd/nullkinesis, its own process),
//     aggregation off and on, with the bridge's CPU time and peak RSS
//     from /proc;
//  3. commit-to-accepted latency at a steady rate;
//  4. peak RSS while one very large transaction flows;
//  5. DynamoDB Local's stream, and a scripted DynamoDB Streams server,
//     into the null endpoint;
//  6. the same backlog into kinesalite;
//  7. a backlog where one row takes half of 300,000 changes, into a null
//     endpoint that adds a 20 ms round trip and checks per-row order,
//     with AGGREGATE=hot, =true and (for 30 s) =false;
//  8. on-demand snapshots of a 1,000,000-row table (cdcbridge snapshot):
//     rows/s alone and while 1,000 changes/s are committed, with those
//     changes' commit-to-accepted latency beside a baseline without a
//     snapshot, and the bridge's peak RSS.
//
// It prints a table and writes every figure, the settings and the machine
// to bench/results.json. With -profile it also saves CPU and allocation
// profiles of the bridge under bench/out/profiles. Timings are printed,
// never asserted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

type options struct {
	reps          int
	changes       int
	bigTx         int
	latencyRate   int
	latencyWindow time.Duration
	latencyWarmup time.Duration
	ddbItems      int
	scriptedItems int
	kinesalite    int
	hotChanges    int
	snapshotRows  int
	shards        int
	profile       bool
	outDir        string
	results       string
	only          map[string]bool
	env           []string // extra environment of every bridge run
	compare       string   // another cdcbridge binary run alongside, aggregation off
	aggregation   bool     // also measure with aggregation on
	memLimit      string   // GOMEMLIMIT of the extra footprint runs ("" for none)
	commit        string   // what was measured, when not from git describe
}

// envFlags collects repeated -env KEY=VALUE flags.
type envFlags []string

func (e *envFlags) String() string { return strings.Join(*e, " ") }
func (e *envFlags) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*e = append(*e, v)
	return nil
}

var phases = []string{"throughput", "kinesalite", "hotkey", "latency", "snapshot", "bigtx", "dynamodb"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	var o options
	var only string
	flag.IntVar(&o.reps, "reps", 3, "repetitions of every measurement")
	flag.IntVar(&o.changes, "changes", 1_000_000, "changes in the backlog")
	flag.IntVar(&o.bigTx, "big-tx", 1_000_000, "rows of the one large transaction")
	flag.IntVar(&o.latencyRate, "latency-rate", 5_000, "changes per second of the latency run")
	flag.DurationVar(&o.latencyWindow, "latency-window", 10*time.Second, "length of one latency repetition")
	flag.DurationVar(&o.latencyWarmup, "latency-warmup", 3*time.Second, "latency samples discarded at the start")
	flag.IntVar(&o.ddbItems, "ddb-items", 50_000, "items written to DynamoDB Local")
	flag.IntVar(&o.scriptedItems, "scripted-items", 200_000, "records of the scripted DynamoDB stream")
	flag.IntVar(&o.kinesalite, "kinesalite-changes", 100_000, "changes timed into kinesalite")
	flag.IntVar(&o.hotChanges, "hot-changes", 300_000, "changes of the hot-key backlog, half of them on one row")
	flag.IntVar(&o.snapshotRows, "snapshot-rows", 1_000_000, "rows of the table the snapshot phase reads")
	flag.IntVar(&o.shards, "shards", 512, "shards of the null stream (the bridge paces each at 1000 records/s)")
	flag.BoolVar(&o.profile, "profile", false, "save CPU and allocation profiles of the bridge")
	flag.StringVar(&o.outDir, "out", filepath.Join(root, "bench", "out"), "directory for logs and profiles")
	flag.StringVar(&o.results, "results", filepath.Join(root, "bench", "results.json"), "results file")
	flag.StringVar(&only, "only", "", "comma-separated phases to run ("+strings.Join(phases, ",")+"); default all")
	var env envFlags
	flag.BoolVar(&o.aggregation, "aggregation", true, "also measure the backlog with aggregation on")
	flag.StringVar(&o.memLimit, "memlimit", "off", "GOMEMLIMIT of extra runs (backlog without aggregation, large transaction) beside the defaults; \"off\" shows the footprint without the soft memory limit cdcbridge sets by default; empty: no such runs")
	flag.StringVar(&o.compare, "compare", "", "another cdcbridge binary to run in every round too (aggregation off), for A/B measurements of a change")
	flag.StringVar(&o.commit, "commit", "", "the commit measured, for the results (default: git describe --always --dirty)")
	flag.Var(&env, "env", "KEY=VALUE added to every bridge's environment (repeatable; for experiments: the figures are then not the defaults')")
	flag.Parse()
	o.env = env
	if only != "" {
		o.only = map[string]bool{}
		for _, p := range strings.Split(only, ",") {
			o.only[strings.TrimSpace(p)] = true
		}
	}
	b := &bench{opts: o, root: root, figs: map[string]figure{}, runs: map[string]any{}}
	return b.run(ctx)
}

// bench holds the servers and results of one benchmark run.
type bench struct {
	opts        options
	root        string
	bin         string // bin/cdcbridge, as make build made it
	profBin     string // the same with a pprof listener (-profile)
	nullkinesis string
	work        string // logs and state of this run (out/logs)

	pg   *testenv.Postgres
	conn *pgx.Conn

	started     time.Time
	loadAtStart float64
	ceilingBest float64 // the fastest pg_recvlogical run, warm-up included
	settings    map[string]string
	plan        backlogPlan
	notes       []string
	figs        map[string]figure
	runs        map[string]any
}

func (b *bench) want(phase string) bool { return b.opts.only == nil || b.opts.only[phase] }

func (b *bench) logf(format string, args ...any) {
	fmt.Printf("[%5.0fs] "+format+"\n", append([]any{time.Since(b.started).Seconds()}, args...)...)
}

func (b *bench) run(ctx context.Context) error {
	b.started = time.Now()
	b.loadAtStart = loadAverage()
	b.bin = filepath.Join(b.root, "bin", "cdcbridge")
	if _, err := os.Stat(b.bin); err != nil {
		return fmt.Errorf("%s missing: run make build first", b.bin)
	}
	if err := os.MkdirAll(b.opts.outDir, 0o755); err != nil {
		return err
	}
	// Logs and checkpoints of this run stay in out/logs for a look after
	// a failure; the next run replaces them.
	b.work = filepath.Join(b.opts.outDir, "logs")
	if err := os.RemoveAll(b.work); err != nil {
		return err
	}
	if err := os.MkdirAll(b.work, 0o755); err != nil {
		return err
	}
	var err error
	if err := b.buildTools(ctx); err != nil {
		return err
	}
	commit := b.opts.commit
	if commit == "" {
		commit = gitCommit(b.root)
	}
	m := describeMachine(commit)
	b.logf("machine: %d cores (%s), %d MiB, Linux %s, %s, commit %s", m.Cores, m.CPU, m.MemoryMiB, m.Kernel, m.GoVersion, m.Commit)

	var pgSettingsShown map[string]string
	b.pg, b.conn, pgSettingsShown, err = startPostgres(ctx)
	if err != nil {
		return err
	}
	defer b.pg.Stop()
	defer b.conn.Close(context.Background())
	b.settings = pgSettingsShown
	b.logf("PostgreSQL started on port %d with:", b.pg.Port)
	for _, k := range shownSettings {
		fmt.Printf("          %s = %s\n", k, b.settings[k])
	}
	if err := execAll(ctx, b.conn, schema...); err != nil {
		return err
	}

	if b.opts.memLimit != "" {
		b.notes = append(b.notes, "rows marked GOMEMLIMIT run the same defaults with GOMEMLIMIT="+b.opts.memLimit+
			"; by default cdcbridge sets a Go soft memory limit of the in-flight budget plus 64MiB (128MiB), or 90% of a container's memory limit")
	}
	if b.want("throughput") || b.want("kinesalite") {
		if err := b.throughputPhase(ctx); err != nil {
			return err
		}
	}
	if b.want("hotkey") {
		if err := b.hotKeyPhase(ctx); err != nil {
			return err
		}
	}
	if b.want("latency") {
		if err := b.latencyPhase(ctx); err != nil {
			return err
		}
	}
	if b.want("snapshot") {
		if err := b.snapshotPhase(ctx); err != nil {
			return err
		}
	}
	if b.want("bigtx") {
		if err := b.bigTxPhase(ctx); err != nil {
			return err
		}
	}
	if b.want("dynamodb") {
		if err := b.dynamoPhase(ctx); err != nil {
			return err
		}
	}
	return b.report(m)
}

// buildTools builds nullkinesis and, with -profile, a bin/cdcbridge with a
// pprof listener: an overlay adds one file to package main, so the
// profiled binary is otherwise the one measured.
func (b *bench) buildTools(ctx context.Context) error {
	b.nullkinesis = filepath.Join(b.opts.outDir, "nullkinesis")
	build := exec.CommandContext(ctx, "go", "build", "-o", b.nullkinesis, "./test/kinesisfake/cmd/nullkinesis")
	build.Dir = b.root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building nullkinesis: %v\n%s", err, out)
	}
	if !b.opts.profile {
		return nil
	}
	overlay := map[string]map[string]string{"Replace": {
		filepath.Join(b.root, "cmd", "cdcbridge", "zz_bench_pprof.go"): filepath.Join(b.root, "bench", "pprof.go.in"),
	}}
	ov := filepath.Join(b.work, "overlay.json")
	if err := writeJSON(ov, overlay); err != nil {
		return err
	}
	b.profBin = filepath.Join(b.opts.outDir, "cdcbridge-pprof")
	build = exec.CommandContext(ctx, "go", "build", "-trimpath", "-overlay", ov, "-o", b.profBin, "./cmd/cdcbridge")
	build.Dir = b.root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the profiling binary: %v\n%s", err, out)
	}
	return nil
}

func gitCommit(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// pgEnv is the bridge's environment for streaming slot of the benchmark
// database without a snapshot; aggregate is CDCBRIDGE_KINESIS_AGGREGATE.
func (b *bench) pgEnv(slot, aggregate string, extra ...string) []string {
	return append([]string{
		"CDCBRIDGE_SOURCE=postgres",
		"CDCBRIDGE_POSTGRES_URL=" + b.pg.URL(database),
		"CDCBRIDGE_POSTGRES_SLOT=" + slot,
		"CDCBRIDGE_POSTGRES_PUBLICATION=" + publication,
		"CDCBRIDGE_POSTGRES_SNAPSHOT=never",
		"CDCBRIDGE_KINESIS_AGGREGATE=" + aggregate,
	}, extra...)
}

// report prints the table and writes the results file.
func (b *bench) report(m machine) error {
	targets := b.targets()
	fmt.Println()
	fmt.Printf("cdcbridge benchmark: %d repetitions, %d changes (%d cores, %s; 1-minute load average %.1f at the start, %.1f at the end)\n\n",
		b.opts.reps, b.plan.Total, m.Cores, m.CPU, b.loadAtStart, loadAverage())
	printTable(os.Stdout, b.figs)
	fmt.Println()
	for _, t := range targets {
		mark := "met"
		if !t.Met {
			mark = "MISSED"
		}
		fmt.Printf("target %-52s %-10s %10.2f %-10s %s\n", t.Name, t.Goal, t.Value, t.Unit, mark)
	}
	for _, n := range b.notes {
		fmt.Println("note:", n)
	}
	generated := time.Now().UTC().Format(time.RFC3339)
	table := markdown(b.figs, m, generated, [2]float64{b.loadAtStart, loadAverage()})
	if err := os.WriteFile(filepath.Join(b.opts.outDir, "results.md"), []byte(table), 0o644); err != nil {
		return err
	}
	res := map[string]any{
		"generated":        generated,
		"command":          "make bench",
		"duration_s":       time.Since(b.started).Seconds(),
		"load_average_1m":  map[string]float64{"start": b.loadAtStart, "end": loadAverage()},
		"machine":          m,
		"postgres":         b.settings,
		"repetitions":      b.opts.reps,
		"bridge_extra_env": b.opts.env,
		"workload": map[string]any{
			"backlog":               b.plan,
			"big_transaction_rows":  b.opts.bigTx,
			"latency_rate":          b.opts.latencyRate,
			"latency_window_s":      b.opts.latencyWindow.Seconds(),
			"dynamodb_local_items":  b.opts.ddbItems,
			"scripted_stream_items": b.opts.scriptedItems,
			"kinesalite_changes":    b.opts.kinesalite,
			"null_stream_shards":    b.opts.shards,
			"hot_key_changes":       b.opts.hotChanges,
			"snapshot_rows":         b.opts.snapshotRows,
			"snapshot_load_rate":    snapLoadRate,
			"hot_key_round_trip_ms": hotDelay.Milliseconds(),
		},
		"bridge_settings": "defaults (linger 50ms, 8 requests in flight, 64MiB / 100000 events in flight, GOMEMLIMIT unset: the bridge's own soft limit of 128MiB) with ORDERING=key; *_memlimit figures add GOMEMLIMIT=" + b.opts.memLimit,
		"figures":         b.figs,
		"targets":         targets,
		"runs":            b.runs,
		"notes":           b.notes,
	}
	if b.opts.only != nil {
		// A partial run does not replace the results file.
		path := filepath.Join(b.opts.outDir, "results-partial.json")
		b.logf("partial run: results in %s", path)
		return writeJSON(path, res)
	}
	b.logf("results in %s; the table in README.md", b.opts.results)
	if err := updateReadme(filepath.Join(b.root, "README.md"), table); err != nil {
		return err
	}
	return writeJSON(b.opts.results, res)
}

func (b *bench) targets() []target {
	var out []target
	add := func(name, goal, key, unit string, ok func(v float64) bool) {
		f, found := b.figs[key]
		if !found {
			return
		}
		out = append(out, target{Name: name, Goal: goal, Value: f.Median, Unit: unit, Met: ok(f.Median)})
	}
	add("end-to-end throughput, aggregation off", ">= 100000", "bridge_changes_per_s", "changes/s", func(v float64) bool { return v >= 100_000 })
	add("ratio to the fastest pg_recvlogical run, aggregation off", ">= 0.50", "bridge_ratio_to_ceiling", "", func(v float64) bool { return v >= 0.5 })
	add("p99 commit-to-accepted latency at 5,000 changes/s", "< 100", "latency_p99_ms", "ms", func(v float64) bool { return v < 100 })
	add("peak RSS, backlog, aggregation off", "< 150", "bridge_peak_rss_mib", "MiB", func(v float64) bool { return v < 150 })
	add("peak RSS, backlog, aggregation on", "< 150", "bridge_agg_peak_rss_mib", "MiB", func(v float64) bool { return v < 150 })
	add("snapshot of a 1,000,000-row table", ">= 100000", "snapshot_rows_per_s", "rows/s", func(v float64) bool { return v >= 100_000 })
	add("p99 of those changes over the p99 without a snapshot", "< 2", "snapshot_p99_ratio", "", func(v float64) bool { return v < 2 })
	add("peak RSS, snapshots of a 1,000,000-row table", "<= 150", "snapshot_peak_rss_mib", "MiB", func(v float64) bool { return v <= 150 })
	add("peak RSS, 1,000,000-row transaction", "< 150", "bigtx_peak_rss_mib", "MiB", func(v float64) bool { return v < 150 })
	add("peak RSS, 1,000,000-row transaction, aggregation on", "< 150", "bigtx_agg_peak_rss_mib", "MiB", func(v float64) bool { return v < 150 })
	add("hot key at 50% of changes, AGGREGATE=hot, AGGREGATE_COMPRESSION=gzip, 20 ms round trip", ">= 20000", "hot_gzip_changes_per_s", "changes/s", func(v float64) bool { return v >= 20_000 })
	// One row's records all go to one shard, which takes 1 MiB/s; the
	// bridge paces each shard to 0.9 of that (SHARD_HEADROOM).
	add("the hot row's shard, as sent, AGGREGATE=hot without compression", ">= 0.85", "hot_hot_shard_mib_per_s", "MiB/s", func(v float64) bool { return v >= 0.85 })
	return out
}

func (b *bench) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	b.notes = append(b.notes, n)
	b.logf("note: %s", n)
}

// printRun logs one throughput run.
func (b *bench) printRun(what string, i int, r throughputRun) {
	b.logf("%s #%d: %.0f changes/s (%.2fs, first after %.2fs), bridge CPU %.2fs (%.2fs/100k), peak RSS %.0f MiB, walsender CPU %.2fs, endpoint CPU %.2fs, %d requests, load %.1f",
		what, i+1, r.ChangesPerSecond, r.Seconds, r.StartupSeconds, r.CPUSeconds, r.CPUPer100k, r.PeakRSSMiB, r.WalsenderCPU, r.EndpointCPU, r.PutRequests, r.LoadAverage)
}
