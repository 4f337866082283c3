package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
)

// figure is one measured quantity over the repetitions.
type figure struct {
	Unit    string    `json:"unit"`
	Min     float64   `json:"min"`
	Median  float64   `json:"median"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

func newFigure(unit string, samples []float64) figure {
	f := figure{Unit: unit, Samples: samples}
	if len(samples) == 0 {
		return f
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	f.Min, f.Max, f.Median = s[0], s[len(s)-1], median(s)
	return f
}

// median of sorted s; the mean of the middle two for an even count.
func median(s []float64) float64 {
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// collect maps runs to one of their fields.
func collect[T any](runs []T, f func(T) float64) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = f(r)
	}
	return out
}

// target is one of the goals and whether this run met it.
type target struct {
	Name  string  `json:"name"`
	Goal  string  `json:"goal"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Met   bool    `json:"met"`
}

type machine struct {
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPU        string `json:"cpu"`
	MemoryMiB  int64  `json:"memory_mib"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go_version"`
	Commit     string `json:"commit"`
}

func describeMachine(commit string) machine {
	m := machine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(), Commit: commit}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryMiB = kb >> 10
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// row is one line of the printed table.
type row struct {
	label, key string
	format     string // for min, median and max
	target     string
}

var tableRows = []row{
	{"ceiling: pg_recvlogical pgoutput -> /dev/null", "ceiling_changes_per_s", "%.0f", ""},
	{"  fastest run, warm-up included", "ceiling_fastest_changes_per_s", "%.0f", ""},
	{"cdcbridge -> null Kinesis, aggregation off", "bridge_changes_per_s", "%.0f", ">= 100000"},
	{"  ratio to the fastest ceiling run", "bridge_ratio_to_ceiling", "%.2f", ">= 0.50"},
	{"  CPU seconds per 100k changes", "bridge_cpu_s_per_100k", "%.2f", ""},
	{"  peak RSS (MiB)", "bridge_peak_rss_mib", "%.0f", "< 150"},
	{"  walsender CPU seconds per 100k changes", "bridge_walsender_cpu_s_per_100k", "%.2f", ""},
	{"  endpoint CPU seconds per 100k changes", "bridge_endpoint_cpu_s_per_100k", "%.2f", ""},
	{"same with GOMEMLIMIT (see notes)", "bridge_memlimit_changes_per_s", "%.0f", ""},
	{"  CPU seconds per 100k changes", "bridge_memlimit_cpu_s_per_100k", "%.2f", ""},
	{"  peak RSS (MiB)", "bridge_memlimit_peak_rss_mib", "%.0f", ""},
	{"compared binary, aggregation off", "compare_changes_per_s", "%.0f", ""},
	{"  CPU seconds per 100k changes", "compare_cpu_s_per_100k", "%.2f", ""},
	{"  peak RSS (MiB)", "compare_peak_rss_mib", "%.0f", ""},
	{"cdcbridge -> null Kinesis, aggregation on", "bridge_agg_changes_per_s", "%.0f", ""},
	{"  ratio to the fastest ceiling run", "bridge_agg_ratio_to_ceiling", "%.2f", ""},
	{"  CPU seconds per 100k changes", "bridge_agg_cpu_s_per_100k", "%.2f", ""},
	{"  peak RSS (MiB)", "bridge_agg_peak_rss_mib", "%.0f", "< 150"},
	{"latency commit -> accepted p50 (ms)", "latency_p50_ms", "%.1f", ""},
	{"latency commit -> accepted p99 (ms)", "latency_p99_ms", "%.1f", "< 100"},
	{"latency commit -> accepted max (ms)", "latency_max_ms", "%.1f", ""},
	{"  achieved rate (changes/s)", "latency_rate", "%.0f", ""},
	{"  CPU seconds per 100k changes", "latency_cpu_s_per_100k", "%.2f", ""},
	{"snapshot of a 1,000,000-row table (rows/s)", "snapshot_rows_per_s", "%.0f", ">= 100000"},
	{"  same while 1,000 changes/s are committed", "snapshot_load_rows_per_s", "%.0f", ""},
	{"  those changes' p99 commit -> accepted (ms)", "snapshot_load_p99_ms", "%.1f", ""},
	{"  p99 of the same load without a snapshot (ms)", "snapshot_baseline_p99_ms", "%.1f", ""},
	{"  ratio of the two", "snapshot_p99_ratio", "%.2f", "< 2"},
	{"  peak RSS (MiB)", "snapshot_peak_rss_mib", "%.0f", "<= 150"},
	{"1,000,000-row transaction: changes/s", "bigtx_changes_per_s", "%.0f", ""},
	{"  peak RSS (MiB)", "bigtx_peak_rss_mib", "%.0f", "< 150"},
	{"  CPU seconds per 100k changes", "bigtx_cpu_s_per_100k", "%.2f", ""},
	{"same, aggregation on", "bigtx_agg_changes_per_s", "%.0f", ""},
	{"  peak RSS (MiB)", "bigtx_agg_peak_rss_mib", "%.0f", "< 150"},
	{"same with GOMEMLIMIT (see notes)", "bigtx_memlimit_changes_per_s", "%.0f", ""},
	{"  peak RSS (MiB)", "bigtx_memlimit_peak_rss_mib", "%.0f", ""},
	{"  CPU seconds per 100k changes", "bigtx_memlimit_cpu_s_per_100k", "%.2f", ""},
	{"DynamoDB Local stream -> null Kinesis", "ddb_local_changes_per_s", "%.0f", ""},
	{"scripted DynamoDB Streams -> null Kinesis", "ddb_scripted_changes_per_s", "%.0f", ""},
	{"  CPU seconds per 100k changes", "ddb_scripted_cpu_s_per_100k", "%.2f", ""},
	{"DynamoDB Local table load (4 segments) -> null Kinesis, items/s", "ddb_local_load_items_per_s", "%.0f", ""},
	{"scripted DynamoDB table load (4 segments) -> null Kinesis, items/s", "ddb_scripted_load_items_per_s", "%.0f", ">= 20000"},
	{"  CPU seconds per 100k items", "ddb_scripted_load_cpu_s_per_100k", "%.2f", ""},
	{"cdcbridge -> kinesalite (changes/s)", "kinesalite_changes_per_s", "%.0f", ""},
	{"one row at 50% of 300k changes, 20 ms round trip, AGGREGATE=hot, AGGREGATE_COMPRESSION=gzip", "hot_gzip_changes_per_s", "%.0f", ">= 20000"},
	{"  the hot row's changes/s", "hot_gzip_row_changes_per_s", "%.0f", ""},
	{"  the hot row's envelopes, MiB/s", "hot_gzip_row_mib_per_s", "%.2f", ""},
	{"  its shard's MiB/s as sent (a full second's burst included)", "hot_gzip_shard_mib_per_s", "%.2f", ""},
	{"  CPU seconds per 100k changes", "hot_gzip_cpu_s_per_100k", "%.2f", ""},
	{"  peak RSS (MiB)", "hot_gzip_peak_rss_mib", "%.0f", ""},
	{"  per-row order violations", "hot_gzip_order_violations", "%.0f", "0"},
	{"same, AGGREGATE=hot without compression", "hot_hot_changes_per_s", "%.0f", ""},
	{"  the hot row's changes/s", "hot_hot_row_changes_per_s", "%.0f", ""},
	{"  its shard's MiB/s as sent (Kinesis takes 1)", "hot_hot_shard_mib_per_s", "%.2f", ">= 0.85"},
	{"  peak RSS (MiB)", "hot_hot_peak_rss_mib", "%.0f", ""},
	{"  per-row order violations", "hot_hot_order_violations", "%.0f", "0"},
	{"same, AGGREGATE=true", "hot_agg_changes_per_s", "%.0f", ""},
	{"  the hot row's changes/s", "hot_agg_row_changes_per_s", "%.0f", ""},
	{"  peak RSS (MiB)", "hot_agg_peak_rss_mib", "%.0f", ""},
	{"  per-row order violations", "hot_agg_order_violations", "%.0f", "0"},
	{"same, AGGREGATE=false (first 30 s)", "hot_plain_changes_per_s", "%.0f", ""},
	{"  the hot row's changes/s", "hot_plain_row_changes_per_s", "%.0f", ""},
	{"  per-row order violations", "hot_plain_order_violations", "%.0f", "0"},
}

func printTable(w io.Writer, figs map[string]figure) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmin\tmedian\tmax\ttarget\t")
	for _, r := range tableRows {
		f, ok := figs[r.key]
		if !ok {
			continue
		}
		fmt.Fprintf(tw, "%s\t"+r.format+"\t"+r.format+"\t"+r.format+"\t%s\t\n", r.label, f.Min, f.Median, f.Max, r.target)
	}
	tw.Flush()
}

// Markers of the README's table, which a full run replaces.
const (
	readmeBegin = "<!-- make bench writes from here -->"
	readmeEnd   = "<!-- to here -->"
)

// updateReadme replaces what lies between the markers in the README with
// the table.
func updateReadme(path, table string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, readmeBegin), strings.Index(s, readmeEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q markers for the table", path, readmeBegin, readmeEnd)
	}
	s = s[:i+len(readmeBegin)] + "\n" + table + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

// markdown returns the table as the README's Performance section shows it.
func markdown(figs map[string]figure, m machine, generated string, load [2]float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %d cores (%s, %d MiB, Linux %s), commit %s, %s; 1-minute load average %.1f at the start, %.1f at the end.\n\n",
		generated, m.Cores, m.CPU, m.MemoryMiB, m.Kernel, m.Commit, m.GoVersion, load[0], load[1])
	b.WriteString("| figure | min | median | max | target |\n|---|---:|---:|---:|---|\n")
	for _, r := range tableRows {
		f, ok := figs[r.key]
		if !ok {
			continue
		}
		label := strings.TrimLeft(r.label, " ")
		if label != r.label {
			label = "&nbsp;&nbsp;" + label
		}
		fmt.Fprintf(&b, "| %s | "+r.format+" | "+r.format+" | "+r.format+" | %s |\n", label, f.Min, f.Median, f.Max, r.target)
	}
	return b.String()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
