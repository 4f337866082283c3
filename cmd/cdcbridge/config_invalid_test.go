package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestEveryVariableRejectsAnInvalidValue runs the binary with a valid
// environment in which one variable has an invalid value, for every
// variable: the bridge must exit with status 2 naming that variable, and
// with no other problem (so the value alone was refused, before anything
// started). A variable added without a case here fails the test.
func TestEveryVariableRejectsAnInvalidValue(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	base := map[string]string{
		"CDCBRIDGE_SOURCE":           "postgres",
		"CDCBRIDGE_KINESIS_STREAM":   "orders",
		"CDCBRIDGE_POSTGRES_URL":     "postgres://app:secret@127.0.0.1:1/app",
		"CDCBRIDGE_HTTP_ADDR":        "127.0.0.1:0",
		"CDCBRIDGE_CHECKPOINT_STORE": "file://" + filepath.Join(dir, "checkpoints.json"),
		"CDCBRIDGE_DLQ_DIR":          filepath.Join(dir, "dlq"),
	}
	tests := []struct {
		variable, value string
		want            string // in the problem line besides the variable's name
	}{
		{"CDCBRIDGE_SOURCE", "mysql", `unknown value "mysql"`},
		// A name Kinesis refuses on every request; the producer retried it for ever.
		{"CDCBRIDGE_KINESIS_STREAM", "bad stream!", "not a stream name"},
		{"CDCBRIDGE_KINESIS_STREAM", "arn:aws:kinesis:us-east-1:1:table/orders", "not a Kinesis stream ARN"},
		{"CDCBRIDGE_POSTGRES_URL", "nonsense", "want postgres://"},
		{"CDCBRIDGE_POSTGRES_URL", "postgres://app:secret@127.0.0.1:99999/app", "127.0.0.1"},
		// Passed the configuration, then stopped the source with exit 1.
		{"CDCBRIDGE_POSTGRES_SLOT", "1abc", "not starting with a digit"},
		{"CDCBRIDGE_POSTGRES_PUBLICATION", "Pub$X", "lower-case letters"},
		{"CDCBRIDGE_POSTGRES_PUBLICATION", strings.Repeat("p", 60), "at most 51 characters"},
		{"CDCBRIDGE_POSTGRES_TABLES", `public.orders, "unterminated.x`, "unterminated quote"},
		{"CDCBRIDGE_POSTGRES_TABLES", "orders", "is not schema.table"},
		{"CDCBRIDGE_POSTGRES_TABLES", "public.bad table", "not an SQL name"},
		{"CDCBRIDGE_POSTGRES_SNAPSHOT", "always", `unknown value "always"`},
		{"CDCBRIDGE_POSTGRES_SNAPSHOT_CHUNK_ROWS", "0", "not a positive integer"},
		{"CDCBRIDGE_POSTGRES_ON_SLOT_LOST", "ignore", `unknown value "ignore"`},
		{"CDCBRIDGE_POSTGRES_FAILOVER", "maybe", `unknown value "maybe"`},
		{"CDCBRIDGE_POSTGRES_STANDBY_URLS", "nonsense,postgres://a@127.0.0.1/app", "want postgres://"},
		{"CDCBRIDGE_DYNAMODB_TABLE", "bad table!", "not a DynamoDB table name"},
		{"CDCBRIDGE_DYNAMODB_STREAM_ARN", "arn:aws:dynamodb:us-east-1:1:table/orders", "not a DynamoDB stream ARN"},
		{"CDCBRIDGE_DYNAMODB_START", "now", `unknown value "now"`},
		{"CDCBRIDGE_DYNAMODB_ON_TRIMMED", "retry", `unknown value "retry"`},
		{"CDCBRIDGE_DYNAMODB_SNAPSHOT", "always", `unknown value "always"`},
		{"CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS", "2000", "want 0"},
		{"CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU", "-1", "0 or more"},
		{"CDCBRIDGE_DYNAMODB_SNAPSHOT_CONFIRM_LONG", "maybe", "not a boolean"},
		{"CDCBRIDGE_DYNAMODB_IDLE_POLL", "soon", "not a positive duration"},
		{"CDCBRIDGE_LEASE_DURATION", "500ms", "at least 1s"},
		{"CDCBRIDGE_CHECKPOINT_STORE", "redis://x", "unknown scheme"},
		{"CDCBRIDGE_KINESIS_LINGER", "soon", "not a positive duration"},
		{"CDCBRIDGE_KINESIS_MAX_IN_FLIGHT", "0", "not between 1 and 256"},
		{"CDCBRIDGE_KINESIS_AGGREGATE", "maybe", "not false, true or hot"},
		{"CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION", "zstd", "not none or gzip"},
		{"CDCBRIDGE_KINESIS_CONNECT_TIMEOUT", "-1s", "not a positive duration"},
		{"CDCBRIDGE_KINESIS_REQUEST_TIMEOUT", "0s", "not a positive duration"},
		// The bound cmd and the sink disagreed on (1 MiB and 1 KiB).
		{"CDCBRIDGE_KINESIS_MAX_REQUEST_BYTES", "512KiB", "below 1MiB"},
		{"CDCBRIDGE_KINESIS_MAX_REQUEST_BYTES", "11MiB", "above the 10 MiB"},
		{"CDCBRIDGE_KINESIS_AGGREGATE_MAX_BYTES", "lots", "not a size"},
		{"CDCBRIDGE_KINESIS_SHARD_HEADROOM", "2", "not a fraction"},
		{"CDCBRIDGE_ORDERING", "partial", `unknown value "partial"`},
		{"CDCBRIDGE_OVERSIZE", "drop", `unknown value "drop"`},
		{"CDCBRIDGE_DLQ_DIR", "dlq", "not an absolute path"},
		{"CDCBRIDGE_MAX_INFLIGHT_BYTES", "lots", "not a size"},
		{"CDCBRIDGE_MAX_INFLIGHT_EVENTS", "-5", "not a positive integer"},
		{"CDCBRIDGE_HTTP_ADDR", "127.0.0.1:99999", "no valid port"},
		{"CDCBRIDGE_LOG_LEVEL", "loud", `unknown value "loud"`},
		{"CDCBRIDGE_LOG_FORMAT", "xml", `unknown value "xml"`},
		{"CDCBRIDGE_SHUTDOWN_TIMEOUT", "forever", "not a positive duration"},
		// Not a variable: a misspelt one was ignored, and the bridge ran
		// without compression.
		{"CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSON", "gzip", "did you mean CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION?"},
	}

	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.variable] = true
	}
	for _, v := range configVars() {
		if !covered[v.Name] {
			t.Errorf("%s has no invalid-value case", v.Name)
		}
	}

	run := func(t *testing.T, env map[string]string, args ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = []string{"HOME=" + dir} // nothing else: no PG* or stray CDCBRIDGE_ variables
		keys := make([]string, 0, len(env))
		for k := range env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			cmd.Env = append(cmd.Env, k+"="+env[k])
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), stderr.String()
		} else if err != nil {
			t.Fatalf("running %s: %v", bin, err)
		}
		return 0, stderr.String()
	}
	if code, stderr := run(t, base, "config", "--check"); code != 0 {
		t.Fatalf("the base environment is invalid (exit %d):\n%s", code, stderr)
	}

	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.variable, "CDCBRIDGE_")+"="+tt.value, func(t *testing.T) {
			env := map[string]string{tt.variable: tt.value}
			for k, v := range base {
				if k != tt.variable {
					env[k] = v
				}
			}
			code, stderr := run(t, env, "run")
			if code != exitConfig {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitConfig, stderr)
			}
			var problems []string
			for _, line := range strings.Split(stderr, "\n") {
				if strings.HasPrefix(line, "  ") {
					problems = append(problems, strings.TrimSpace(line))
				}
			}
			if len(problems) != 1 || !strings.HasPrefix(problems[0], tt.variable) || !strings.Contains(problems[0], tt.want) {
				t.Fatalf("want one problem naming %s with %q; stderr:\n%s", tt.variable, tt.want, stderr)
			}
			if strings.Contains(stderr, "secret") {
				t.Errorf("stderr shows the password:\n%s", stderr)
			}
		})
	}
}
