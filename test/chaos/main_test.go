package chaos

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

var params Params

func TestMain(m *testing.M) {
	p, err := ParamsFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	params = p
	// The scenarios mostly wait: for faults to pass, for servers, for the
	// bridge to catch up. Unless -test.parallel is given, run more of them
	// at once than the number of CPUs (go test's default).
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "8")
	}
	form := Pick(p, "short", "long")
	start := time.Now()
	fmt.Printf("chaos: %s form, seed %d (replay with CHAOS_SEED=%d)\n", form, p.Seed, p.Seed)
	code := testenv.Main(m)
	took := time.Since(start).Round(time.Second)
	if rows := Rows(); len(rows) > 0 {
		tbl := TableString(rows)
		if MemoryNote != "" {
			tbl += "\n" + MemoryNote + ".\n"
		}
		fmt.Printf("\nchaos: %s form, seed %d, run time %s\n\n%s\n", form, p.Seed, took, tbl)
		if path := os.Getenv("CHAOS_REPORT"); path != "" {
			head := fmt.Sprintf("Form %s, seed %d, run time %s, %s.\n\n", form, p.Seed, took, time.Now().UTC().Format("2006-01-02"))
			if err := os.WriteFile(path, []byte(head+tbl), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "chaos: writing the report:", err)
			}
		}
	}
	os.Exit(code)
}
