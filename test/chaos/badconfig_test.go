package chaos

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// runOnce runs the binary with env until it exits (at most timeout) and
// returns its exit status and output.
func runOnce(t *testing.T, timeout time.Duration, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, out.String()
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// TestBadConfig sets every variable to each of its kinds of invalid value:
// the bridge must exit with status 2 and a message naming the variable.
// Every variable `cdcbridge config` lists must be covered here.
func TestBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := map[string]string{
		"CDCBRIDGE_SOURCE":           "postgres",
		"CDCBRIDGE_KINESIS_STREAM":   "orders",
		"CDCBRIDGE_POSTGRES_URL":     "postgres://postgres@127.0.0.1:1/app",
		"CDCBRIDGE_CHECKPOINT_STORE": "file://" + filepath.Join(dir, "cp.json"),
		"CDCBRIDGE_DLQ_DIR":          filepath.Join(dir, "dlq"),
		"CDCBRIDGE_HTTP_ADDR":        "127.0.0.1:0",
		"AWS_ENDPOINT_URL_KINESIS":   "http://127.0.0.1:1",
	}
	type tc struct {
		v, val string
		env    map[string]string // further settings
	}
	ddb := map[string]string{"CDCBRIDGE_SOURCE": "dynamodb", "CDCBRIDGE_DYNAMODB_TABLE": "orders"}
	cases := []tc{
		{"SOURCE", "kafka", nil}, {"SOURCE", "", nil}, {"SOURCE", "Postgres", nil},
		{"KINESIS_STREAM", "", nil}, {"KINESIS_STREAM", "   ", nil},
		{"POSTGRES_URL", "", nil}, {"POSTGRES_URL", "mysql://u@h/db", nil}, {"POSTGRES_URL", "postgres://u:p@[::1/db", nil},
		{"POSTGRES_URL", "just words", nil},
		{"POSTGRES_SLOT", "Bad-Slot", nil}, {"POSTGRES_SLOT", strings.Repeat("s", 64), nil}, {"POSTGRES_SLOT", "slot;drop", nil},
		{"POSTGRES_PUBLICATION", "1pub", nil}, {"POSTGRES_PUBLICATION", "bad-name", nil}, {"POSTGRES_PUBLICATION", strings.Repeat("p", 64), nil},
		{"POSTGRES_TABLES", "items", nil}, {"POSTGRES_TABLES", "public.items,public.bad table", nil}, {"POSTGRES_TABLES", "a.b.c", nil},
		{"POSTGRES_SNAPSHOT", "sometimes", nil}, {"POSTGRES_SNAPSHOT_CHUNK_ROWS", "0", nil}, {"POSTGRES_ON_SLOT_LOST", "ignore", nil},
		{"POSTGRES_FAILOVER", "yes", nil}, {"POSTGRES_STANDBY_URLS", "standby.internal:5432", nil},
		{"POSTGRES_STANDBY_URLS", "postgres://u:p@[::1/db", nil},
		{"DYNAMODB_TABLE", "", map[string]string{"CDCBRIDGE_SOURCE": "dynamodb"}},
		{"DYNAMODB_STREAM_ARN", "arn:aws:dynamodb:us-east-1:1:table/orders/stream/x", ddb},
		{"DYNAMODB_STREAM_ARN", "not-an-arn", map[string]string{"CDCBRIDGE_SOURCE": "dynamodb"}},
		{"DYNAMODB_START", "beginning", nil}, {"DYNAMODB_ON_TRIMMED", "ignore", nil},
		{"DYNAMODB_SNAPSHOT", "sometimes", nil},
		{"DYNAMODB_SNAPSHOT", "initial", map[string]string{"CDCBRIDGE_SOURCE": "dynamodb", "CDCBRIDGE_DYNAMODB_TABLE": "orders", "CDCBRIDGE_CHECKPOINT_STORE": "dynamodb://ckpt"}},
		{"DYNAMODB_SNAPSHOT_SEGMENTS", "many", nil}, {"DYNAMODB_SNAPSHOT_SEGMENTS", "-1", nil}, {"DYNAMODB_SNAPSHOT_SEGMENTS", "1001", nil},
		{"DYNAMODB_SNAPSHOT_MAX_RCU", "lots", nil}, {"DYNAMODB_SNAPSHOT_MAX_RCU", "-5", nil}, {"DYNAMODB_SNAPSHOT_MAX_RCU", "NaN", nil},
		{"DYNAMODB_SNAPSHOT_CONFIRM_LONG", "maybe", nil},
		{"DYNAMODB_IDLE_POLL", "fast", nil}, {"DYNAMODB_IDLE_POLL", "-1s", nil}, {"DYNAMODB_IDLE_POLL", "0", nil},
		{"LEASE_DURATION", "forever", nil}, {"LEASE_DURATION", "0s", nil},
		{"CHECKPOINT_STORE", "s3://bucket/key", nil}, {"CHECKPOINT_STORE", "file://relative/cp.json", nil},
		{"CHECKPOINT_STORE", "dynamodb://", nil}, {"CHECKPOINT_STORE", "%zz", nil}, {"CHECKPOINT_STORE", "/var/lib/cp.json", nil},
		{"KINESIS_LINGER", "10", nil}, {"KINESIS_LINGER", "-5ms", nil},
		{"KINESIS_MAX_IN_FLIGHT", "0", nil}, {"KINESIS_MAX_IN_FLIGHT", "-1", nil}, {"KINESIS_MAX_IN_FLIGHT", "many", nil},
		{"KINESIS_MAX_IN_FLIGHT", "100000", nil},
		{"KINESIS_AGGREGATE", "yes please", nil},
		{"KINESIS_AGGREGATE_COMPRESSION", "zstd", nil}, {"KINESIS_AGGREGATE_COMPRESSION", "gzip", nil}, // gzip: without aggregation
		{"KINESIS_CONNECT_TIMEOUT", "soon", nil}, {"KINESIS_CONNECT_TIMEOUT", "0", nil},
		{"KINESIS_REQUEST_TIMEOUT", "soon", nil}, {"KINESIS_REQUEST_TIMEOUT", "-1s", nil},
		{"KINESIS_MAX_REQUEST_BYTES", "20MiB", nil}, {"KINESIS_MAX_REQUEST_BYTES", "100KB", nil}, {"KINESIS_MAX_REQUEST_BYTES", "5 parsecs", nil},
		{"KINESIS_AGGREGATE_MAX_BYTES", "huge", nil}, {"KINESIS_AGGREGATE_MAX_BYTES", "-1", nil},
		{"KINESIS_SHARD_HEADROOM", "lots", nil}, {"KINESIS_SHARD_HEADROOM", "2", nil}, {"KINESIS_SHARD_HEADROOM", "-0.5", nil},
		{"ORDERING", "strict", nil}, {"OVERSIZE", "drop", nil},
		{"MAX_INFLIGHT_BYTES", "lots", nil}, {"MAX_INFLIGHT_BYTES", "0", nil}, {"MAX_INFLIGHT_BYTES", "-1MiB", nil},
		{"MAX_INFLIGHT_EVENTS", "0", nil}, {"MAX_INFLIGHT_EVENTS", "1e6", nil},
		{"LOG_LEVEL", "verbose", nil}, {"LOG_FORMAT", "xml", nil},
		{"SHUTDOWN_TIMEOUT", "never", nil}, {"SHUTDOWN_TIMEOUT", "-1s", nil},
		{"HTTP_ADDR", "not an address", nil}, {"HTTP_ADDR", "127.0.0.1:99999", nil},
	}
	// A directory's usability shows only when it is used: a dead-letter
	// directory inside a file stops the start with status 1.
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env := BaseEnv()
	for k, v := range base {
		env = append(env, k+"="+v)
	}
	code, out := runOnce(t, 30*time.Second, append(env, "CDCBRIDGE_DLQ_DIR="+filepath.Join(notDir, "dlq"),
		"CDCBRIDGE_CHECKPOINT_STORE=file://"+filepath.Join(dir, "dlq-case", "cp.json")))
	if code != 1 || !strings.Contains(out, "dead-letter directory") || !strings.Contains(out, notDir) {
		t.Errorf("a dead-letter directory inside a file: exit %d, want 1 and a message naming it:\n%s", code, out)
	}

	covered := map[string]bool{"CDCBRIDGE_DLQ_DIR": true}
	for _, c := range cases {
		covered["CDCBRIDGE_"+c.v] = true
	}
	code, out = runOnce(t, 30*time.Second, []string{"PATH=" + os.Getenv("PATH")}, "config")
	if code != 0 {
		t.Fatalf("cdcbridge config: exit %d\n%s", code, out)
	}
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 && !covered[f[0]] {
			t.Errorf("%s has no invalid value in this test", f[0])
		}
	}

	var mu sync.Mutex
	var bad []string
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			settings := map[string]string{}
			for k, v := range base {
				settings[k] = v
			}
			// Each run its own store: a file store is locked by its user.
			settings["CDCBRIDGE_CHECKPOINT_STORE"] = "file://" + filepath.Join(dir, strconv.Itoa(i), "cp.json")
			for k, v := range c.env {
				settings[k] = v
			}
			settings["CDCBRIDGE_"+c.v] = c.val
			env := BaseEnv()
			for k, v := range settings {
				env = append(env, k+"="+v)
			}
			code, out := runOnce(t, 30*time.Second, env)
			if code != 2 || !strings.Contains(out, "CDCBRIDGE_"+c.v) {
				mu.Lock()
				bad = append(bad, "CDCBRIDGE_"+c.v+"="+c.val+": exit "+strconv.Itoa(code)+": "+firstLines(out, 3))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, b := range bad {
		t.Errorf("want exit 2 and a message naming the variable; got %s", b)
	}

	// Every problem at once: one line each.
	env = BaseEnv()
	for _, kv := range []string{"CDCBRIDGE_SOURCE=kafka", "CDCBRIDGE_KINESIS_LINGER=10", "CDCBRIDGE_ORDERING=strict", "CDCBRIDGE_LOG_LEVEL=loud"} {
		env = append(env, kv)
	}
	code, out = runOnce(t, 30*time.Second, env)
	if code != 2 {
		t.Errorf("several problems: exit %d, want 2\n%s", code, out)
	}
	for _, v := range []string{"CDCBRIDGE_SOURCE", "CDCBRIDGE_KINESIS_STREAM", "CDCBRIDGE_KINESIS_LINGER", "CDCBRIDGE_ORDERING", "CDCBRIDGE_LOG_LEVEL"} {
		if !strings.Contains(out, v) {
			t.Errorf("several problems: %s not named:\n%s", v, out)
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}
