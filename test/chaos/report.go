package chaos

import (
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Params select the form of a run.
type Params struct {
	// Long is the `make chaos` form: bigger workloads, more faults, the
	// full 30-second outage (CHAOS_LONG=1).
	Long bool
	// Seed drives every workload and fault schedule (CHAOS_SEED; a new
	// one per run by default). The same seed replays the same decisions;
	// timing still differs between runs.
	Seed uint64
}

// ParamsFromEnv reads CHAOS_LONG and CHAOS_SEED.
func ParamsFromEnv() (Params, error) {
	p := Params{Seed: uint64(time.Now().UnixNano()) % 1_000_000_000}
	switch v := os.Getenv("CHAOS_LONG"); v {
	case "", "0", "false":
	case "1", "true":
		p.Long = true
	default:
		return p, fmt.Errorf("CHAOS_LONG=%q: want 1 or 0", v)
	}
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return p, fmt.Errorf("CHAOS_SEED=%q: %v", v, err)
		}
		p.Seed = n
	}
	return p, nil
}

// Rand returns the random source of one scenario: the run's seed mixed
// with the scenario's name, so each scenario replays alone.
func (p Params) Rand(scenario string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(scenario))
	return rand.New(rand.NewPCG(p.Seed, h.Sum64()))
}

// Pick returns short or long by the form of the run.
func Pick[T any](p Params, short, long T) T {
	if p.Long {
		return long
	}
	return short
}

// Row is one line of the reliability table.
type Row struct {
	Scenario        string
	Written         int
	Delivered       int
	Missing         int
	OrderViolations int
	Duplicates      int
	Restarts        int
	WorstLag        time.Duration
	Passed          bool
}

var table struct {
	mu   sync.Mutex
	rows []Row
}

// Report adds a row to the table PrintTable prints.
func Report(r Row) {
	table.mu.Lock()
	table.rows = append(table.rows, r)
	table.mu.Unlock()
}

// scenarioOrder lists the table's rows in the order of the issue's
// scenarios; rows not named here follow in the order they were reported.
var scenarioOrder = []string{
	"kill -9 (postgres)", "kill -9 (dynamodb)", "kinesis faults", "postgres restarts", "dynamodb streams faults",
	"disk: checkpoint dir unwritable (postgres)", "disk: checkpoint dir unwritable (dynamodb)",
	"disk: dead-letter dir unwritable, full", "SIGTERM under load (postgres)", "SIGTERM under load (dynamodb)",
	"bad input: awkward rows", "bad input: credentials refused mid-run",
	"bad input: malformed Kinesis answers", "bad input: malformed DynamoDB Streams answers",
}

// Rows returns the rows reported so far, in the scenarios' order.
func Rows() []Row {
	table.mu.Lock()
	rows := append([]Row(nil), table.rows...)
	table.mu.Unlock()
	rank := func(name string) int {
		for i, n := range scenarioOrder {
			if n == name {
				return i
			}
		}
		return len(scenarioOrder)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rank(rows[i].Scenario) < rank(rows[j].Scenario) })
	return rows
}

// PrintTable writes the table as Markdown.
func PrintTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| scenario\t changes written\t delivered\t missing\t order violations\t duplicates\t restarts\t worst lag\t result\t")
	fmt.Fprintln(tw, "|---\t---:\t---:\t---:\t---:\t---:\t---:\t---:\t---\t")
	for _, r := range rows {
		result := "pass"
		if !r.Passed {
			result = "FAIL"
		}
		fmt.Fprintf(tw, "| %s\t %d\t %d\t %d\t %d\t %d\t %d\t %s\t %s\t\n", r.Scenario, r.Written, r.Delivered, r.Missing,
			r.OrderViolations, r.Duplicates, r.Restarts, r.WorstLag.Round(10*time.Millisecond), result)
	}
	tw.Flush()
}

// TableString is PrintTable's output as a string.
func TableString(rows []Row) string {
	var b strings.Builder
	PrintTable(&b, rows)
	// tabwriter's Debug mode separates columns with '|'; the Markdown
	// table needs them at line ends too.
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		out.WriteString(strings.TrimRight(line, " "))
		out.WriteString("\n")
	}
	return out.String()
}
