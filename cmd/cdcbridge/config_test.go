package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// setEnv clears every CDCBRIDGE_ variable and sets kv for the test.
func setEnv(t *testing.T, kv map[string]string) {
	t.Helper()
	for _, v := range configVars() {
		t.Setenv(v.Name, "")
	}
	for k, v := range kv {
		t.Setenv(k, v)
	}
}

func TestConfigValid(t *testing.T) {
	setEnv(t, map[string]string{
		"CDCBRIDGE_SOURCE":             "postgres",
		"CDCBRIDGE_KINESIS_STREAM":     "orders",
		"CDCBRIDGE_POSTGRES_URL":       "postgres://app:pw@db:5432/app",
		"CDCBRIDGE_POSTGRES_TABLES":    "public.orders, sales.items",
		"CDCBRIDGE_MAX_INFLIGHT_BYTES": "10MB",
		"CDCBRIDGE_CHECKPOINT_STORE":   "dynamodb://cdc-leases",
	})
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"tables": []string{"public.orders", "sales.items"}, "bytes": int64(10_000_000), "scheme": "dynamodb", "target": "cdc-leases",
		"linger": 50 * time.Millisecond, "inflight": 8, "slot": "cdcbridge", "ordering": "key", "reqbytes": int64(5 << 20),
		// One variable, two packages: the lease and request timeouts.
		"leader": 10 * time.Second, "lease": 10 * time.Second, "send": 10 * time.Second, "request": 10 * time.Second,
	}
	got := map[string]any{
		"tables": c.Postgres.Tables, "bytes": c.Sink.MaxInFlightBytes, "scheme": c.Store.Scheme, "target": c.Store.Target,
		"linger": c.Sink.Linger, "inflight": c.Sink.MaxInFlight, "slot": c.Postgres.Slot, "ordering": string(c.Sink.Ordering), "reqbytes": int64(c.Sink.MaxRequestBytes),
		"leader": c.Postgres.LeaderTimeout, "lease": c.DynamoDB.LeaseDuration, "send": c.DynamoDB.SendTimeout, "request": c.Sink.RequestTimeout,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("config (-want +got):\n%s", diff)
	}
}

func TestConfigErrors(t *testing.T) {
	base := func(extra map[string]string) map[string]string {
		m := map[string]string{
			"CDCBRIDGE_SOURCE": "postgres", "CDCBRIDGE_KINESIS_STREAM": "s", "CDCBRIDGE_POSTGRES_URL": "postgres://h/db",
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name string
		env  map[string]string
		want []string // one line per problem
	}{
		{"nothing set", map[string]string{}, []string{
			"CDCBRIDGE_SOURCE is required (one of postgres, dynamodb)",
			"CDCBRIDGE_KINESIS_STREAM is required",
		}},
		{"unknown source", base(map[string]string{"CDCBRIDGE_SOURCE": "mysql"}), []string{
			`CDCBRIDGE_SOURCE: unknown value "mysql" (one of postgres, dynamodb)`,
		}},
		{"postgres without url", base(map[string]string{"CDCBRIDGE_POSTGRES_URL": ""}), []string{
			"CDCBRIDGE_POSTGRES_URL is required with CDCBRIDGE_SOURCE=postgres",
		}},
		{"dynamodb neither", map[string]string{"CDCBRIDGE_SOURCE": "dynamodb", "CDCBRIDGE_KINESIS_STREAM": "s"}, []string{
			"exactly one of CDCBRIDGE_DYNAMODB_TABLE and CDCBRIDGE_DYNAMODB_STREAM_ARN is required with CDCBRIDGE_SOURCE=dynamodb (got neither)",
		}},
		{"dynamodb both", map[string]string{"CDCBRIDGE_SOURCE": "dynamodb", "CDCBRIDGE_KINESIS_STREAM": "s",
			"CDCBRIDGE_DYNAMODB_TABLE": "orders", "CDCBRIDGE_DYNAMODB_STREAM_ARN": "arn:aws:dynamodb:us-east-1:1:table/orders/stream/x"}, []string{
			"(got both)",
		}},
		{"checkpoint file with a host", base(map[string]string{"CDCBRIDGE_CHECKPOINT_STORE": "file://relative/cp.json"}), []string{
			`CDCBRIDGE_CHECKPOINT_STORE: "file://relative/cp.json" needs an absolute path`,
		}},
		{"too many requests in flight", base(map[string]string{"CDCBRIDGE_KINESIS_MAX_IN_FLIGHT": "100000"}), []string{
			"CDCBRIDGE_KINESIS_MAX_IN_FLIGHT: 100000 is not between 1 and 256",
		}},
		{"hot aggregation without key ordering", base(map[string]string{"CDCBRIDGE_KINESIS_AGGREGATE": "hot", "CDCBRIDGE_ORDERING": "none"}), []string{
			"CDCBRIDGE_KINESIS_AGGREGATE=hot needs CDCBRIDGE_ORDERING=key",
		}},
		{"compression without aggregation", base(map[string]string{"CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION": "gzip"}), []string{
			"CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip needs CDCBRIDGE_KINESIS_AGGREGATE=hot or true",
		}},
		{"listen address", base(map[string]string{"CDCBRIDGE_HTTP_ADDR": "not an address"}), []string{
			`CDCBRIDGE_HTTP_ADDR: "not an address" is not host:port`,
		}},
		{"listen port", base(map[string]string{"CDCBRIDGE_HTTP_ADDR": "127.0.0.1:99999"}), []string{
			`CDCBRIDGE_HTTP_ADDR: "127.0.0.1:99999" has no valid port`,
		}},
		{"dynamodb loads", base(map[string]string{
			"CDCBRIDGE_SOURCE":                         "dynamodb",
			"CDCBRIDGE_DYNAMODB_TABLE":                 "orders",
			"CDCBRIDGE_CHECKPOINT_STORE":               "dynamodb://ckpt",
			"CDCBRIDGE_DYNAMODB_SNAPSHOT":              "initial",
			"CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS":     "2000",
			"CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU":      "-1",
			"CDCBRIDGE_DYNAMODB_SNAPSHOT_CONFIRM_LONG": "maybe",
		}), []string{
			`CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS: 2000: want 0 (from the table's size) to 1000`,
			`CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU: -1: want a number of read capacity units per second, 0 or more`,
			`CDCBRIDGE_DYNAMODB_SNAPSHOT_CONFIRM_LONG: "maybe" is not a boolean (true or false)`,
			`CDCBRIDGE_DYNAMODB_SNAPSHOT=initial is not supported yet with CDCBRIDGE_CHECKPOINT_STORE=dynamodb://`,
		}},
		{"every bad value at once", base(map[string]string{
			"CDCBRIDGE_KINESIS_LINGER":                "soon",
			"CDCBRIDGE_SHUTDOWN_TIMEOUT":              "-1s",
			"CDCBRIDGE_MAX_INFLIGHT_BYTES":            "lots",
			"CDCBRIDGE_KINESIS_MAX_REQUEST_BYTES":     "64MiB",
			"CDCBRIDGE_KINESIS_MAX_IN_FLIGHT":         "0",
			"CDCBRIDGE_KINESIS_AGGREGATE":             "maybe",
			"CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION": "zstd",
			"CDCBRIDGE_ORDERING":                      "partial",
			"CDCBRIDGE_OVERSIZE":                      "drop",
			"CDCBRIDGE_POSTGRES_SNAPSHOT":             "always",
			"CDCBRIDGE_POSTGRES_ON_SLOT_LOST":         "ignore",
			"CDCBRIDGE_POSTGRES_TABLES":               "orders",
			"CDCBRIDGE_POSTGRES_SLOT":                 "My-Slot",
			"CDCBRIDGE_DYNAMODB_START":                "now",
			"CDCBRIDGE_DYNAMODB_ON_TRIMMED":           "retry",
			"CDCBRIDGE_CHECKPOINT_STORE":              "redis://x",
			"CDCBRIDGE_LOG_LEVEL":                     "loud",
			"CDCBRIDGE_LOG_FORMAT":                    "xml",
		}), []string{
			`CDCBRIDGE_KINESIS_LINGER: "soon" is not a positive duration`,
			`CDCBRIDGE_SHUTDOWN_TIMEOUT: "-1s" is not a positive duration`,
			`CDCBRIDGE_MAX_INFLIGHT_BYTES: "lots" is not a size (for example 64MiB, 10MB, 1048576)`,
			`CDCBRIDGE_KINESIS_MAX_REQUEST_BYTES: 67108864 is above the 10 MiB`,
			`CDCBRIDGE_KINESIS_MAX_IN_FLIGHT: 0 is not between 1 and 256`,
			`CDCBRIDGE_KINESIS_AGGREGATE: "maybe" is not false, true or hot`,
			`CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION: "zstd" is not none or gzip`,
			`CDCBRIDGE_ORDERING: unknown value "partial" (one of key, none)`,
			`CDCBRIDGE_OVERSIZE: unknown value "drop" (one of dlq, fail)`,
			`CDCBRIDGE_POSTGRES_SNAPSHOT: unknown value "always" (one of initial, never)`,
			`CDCBRIDGE_POSTGRES_ON_SLOT_LOST: unknown value "ignore" (one of fail, resnapshot, continue)`,
			`CDCBRIDGE_POSTGRES_TABLES: "orders" is not schema.table`,
			`CDCBRIDGE_POSTGRES_SLOT: "My-Slot": use 1 to 63 lower-case letters`,
			`CDCBRIDGE_DYNAMODB_START: unknown value "now" (one of trim_horizon, latest)`,
			`CDCBRIDGE_DYNAMODB_ON_TRIMMED: unknown value "retry" (one of fail, skip)`,
			`CDCBRIDGE_CHECKPOINT_STORE: unknown scheme in "redis://x" (file:///PATH or dynamodb://TABLE)`,
			`CDCBRIDGE_LOG_LEVEL: unknown value "loud" (one of debug, info, warn, error)`,
			`CDCBRIDGE_LOG_FORMAT: unknown value "xml" (one of json, text)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range configVars() {
				t.Setenv(v.Name, v.Default)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if _, ok := tt.env["CDCBRIDGE_SOURCE"]; !ok {
				t.Setenv("CDCBRIDGE_SOURCE", "")
			}
			_, err := loadConfig()
			if err == nil {
				t.Fatal("invalid configuration accepted")
			}
			msg := err.Error()
			lines := strings.Split(strings.TrimPrefix(msg, "invalid configuration:\n"), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("got %d problem lines, want %d:\n%s", len(lines), len(tt.want), msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("missing %q in:\n%s", w, msg)
				}
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"64MiB", 64 << 20, true}, {"10MB", 10_000_000, true}, {"1048576", 1 << 20, true}, {"512KiB", 512 << 10, true},
		{"2GiB", 2 << 30, true}, {"7 KB", 7000, true}, {"1B", 1, true},
		{"", 0, false}, {"MiB", 0, false}, {"-5MiB", 0, false}, {"0", 0, false}, {"5XB", 0, false}, {"1.5MiB", 0, false},
		{"99999999999999999999", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://app:s3cret@db:5432/app?sslmode=require", "postgres://app:xxxxx@db:5432/app?sslmode=require"},
		{"postgres://app@db/app?password=s3cret", "postgres://app@db/app?password=xxxxx"},
		{"host=db user=app password=s3cret dbname=app", "host=db user=app password=xxxxx dbname=app"},
		{"host=db password='s3 cret' dbname=app", "host=db password=xxxxx dbname=app"},
		{"postgres://app@db/app", "postgres://app@db/app"},
	}
	for _, tt := range tests {
		if got := redactURL(tt.in); got != tt.want || strings.Contains(got, "s3") {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := redactError(`connecting to postgres://app:s3cret@db/app: refused`, "postgres://app:s3cret@db/app"); strings.Contains(got, "s3cret") {
		t.Errorf("redactError kept the password: %s", got)
	}
}

func TestPrintConfigRedacts(t *testing.T) {
	t.Setenv("CDCBRIDGE_POSTGRES_URL", "postgres://app:topsecret@db/app")
	var b strings.Builder
	if err := printConfig(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "topsecret") || !strings.Contains(out, "postgres://app:xxxxx@db/app") {
		t.Fatalf("config output does not redact the password:\n%s", out)
	}
	for _, v := range configVars() {
		if !strings.Contains(out, v.Name) || v.Desc == "" {
			t.Errorf("variable %s missing or without meaning", v.Name)
		}
	}
}

// TestConfigQuotedTables: the tables variable takes quoted SQL names, with
// commas and dots inside the quotes, as the source parses them.
func TestConfigQuotedTables(t *testing.T) {
	setEnv(t, map[string]string{
		"CDCBRIDGE_SOURCE":          "postgres",
		"CDCBRIDGE_KINESIS_STREAM":  "orders",
		"CDCBRIDGE_POSTGRES_URL":    "postgres://app@db/app",
		"CDCBRIDGE_POSTGRES_TABLES": `"My Schema"."Odd,Table", public.orders,"a""b".x.y`,
	})
	_, err := loadConfig()
	if err == nil || !strings.Contains(err.Error(), `CDCBRIDGE_POSTGRES_TABLES: "\"a\"\"b\".x.y" is not schema.table`) {
		t.Fatalf("three-part name: %v", err)
	}
	t.Setenv("CDCBRIDGE_POSTGRES_TABLES", `"My Schema"."Odd,Table", public.orders, "a""b".x`)
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{`"My Schema"."Odd,Table"`, "public.orders", `"a""b".x`}, c.Postgres.Tables); diff != "" {
		t.Fatalf("tables (-want +got):\n%s", diff)
	}
}

func TestUnknownVariables(t *testing.T) {
	var p parser
	p.unknownVariables([]string{
		"CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSON=gzip",
		"CDCBRIDGE_POSTGRES_SLTO=x",
		"CDCBRIDGE_SOURCE=postgres",        // an option
		"CDCBRIDGE_TEST_PG_VERSION=17",     // the tests' own knobs
		"CDCBRIDGE_BENCH_PPROF_ADDR=:6060", // the benchmark's
		"PATH=/bin", "cdcbridge_source=x",  // not ours
	})
	want := []string{
		"CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSON is not a cdcbridge variable; did you mean CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION? (cdcbridge config lists them all)",
		"CDCBRIDGE_POSTGRES_SLTO is not a cdcbridge variable; did you mean CDCBRIDGE_POSTGRES_SLOT? (cdcbridge config lists them all)",
	}
	if diff := cmp.Diff(want, p.problems); diff != "" {
		t.Fatalf("problems (-want +got):\n%s", diff)
	}
}

// TestConfigJSON: `cdcbridge config --json` lists the declarations, and
// every default is a value its own variable accepts.
func TestConfigJSON(t *testing.T) {
	var out, errOut strings.Builder
	if code := run(context.Background(), []string{"config", "--json"}, &out, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var got []configVar
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatal(err)
	}
	want := configVars()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("config --json (-want +got):\n%s", diff)
	}
	for _, o := range options {
		if o.def == "" {
			continue
		}
		var p parser
		p.current = o.name
		o.set(&p, &Config{}, o.def)
		if len(p.problems) > 0 {
			t.Errorf("the default of %s is refused: %v", name(o.name), p.problems)
		}
	}
}
