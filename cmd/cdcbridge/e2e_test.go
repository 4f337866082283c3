package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var binPath string

// buildBinary builds cdcbridge once per test binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	if binPath != "" {
		return binPath
	}
	dir, err := os.MkdirTemp("", "cdcbridge-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "cdcbridge")
	cmd := exec.Command("go", "build", "-race", "-o", out, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	binPath = out
	return out
}

func TestBinaryWithoutEnvironmentExits2(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2; stderr:\n%s", err, stderr.String())
	}
	for _, v := range []string{"CDCBRIDGE_SOURCE", "CDCBRIDGE_KINESIS_STREAM"} {
		if !strings.Contains(stderr.String(), v) {
			t.Errorf("stderr does not name %s:\n%s", v, stderr.String())
		}
	}
}

type bridge struct {
	t       *testing.T
	cmd     *exec.Cmd
	addr    string
	logPath string
	exited  chan error
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startBridge(t *testing.T, env []string) *bridge {
	t.Helper()
	b := &bridge{t: t, addr: freeLoopbackAddr(t), exited: make(chan error, 1)}
	b.logPath = filepath.Join(t.TempDir(), "cdcbridge.log")
	f, err := os.Create(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(buildBinary(t))
	b.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "CDCBRIDGE_HTTP_ADDR=" + b.addr, "CDCBRIDGE_LOG_FORMAT=text",
		"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true"}, env...)
	b.cmd.Stdout, b.cmd.Stderr = f, f
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.exited <- b.cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		if b.cmd.ProcessState == nil {
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
	})
	return b
}

func (b *bridge) log() string {
	data, _ := os.ReadFile(b.logPath)
	return string(data)
}

func (b *bridge) waitReady(timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-b.exited:
			b.t.Fatalf("cdcbridge exited during start-up: %v\n%s", err, b.log())
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get("http://" + b.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	b.t.Fatalf("cdcbridge not ready after %s\n%s", timeout, b.log())
}

func (b *bridge) get(path string) (int, []byte) {
	resp, err := http.Get("http://" + b.addr + path)
	if err != nil {
		b.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

// waitMetric waits until the sum of a metric over its labels reaches want.
func (b *bridge) waitMetric(name string, want float64, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	got := 0.0
	for time.Now().Before(deadline) {
		_, body := b.get("/metrics")
		got = 0
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
				var v float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				got += v
			}
		}
		if got >= want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("%s = %v after %s, want %v\n%s", name, got, timeout, want, b.log())
}

// stop sends SIGTERM and returns the exit error and how long it took.
func (b *bridge) stop(timeout time.Duration) (error, time.Duration) {
	start := time.Now()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.exited:
		return err, time.Since(start)
	case <-time.After(timeout):
		b.t.Fatalf("cdcbridge did not exit within %s of SIGTERM\n%s", timeout, b.log())
		return nil, 0
	}
}

// TestDaemonPostgresToKinesis runs the binary against real PostgreSQL and
// kinesalite: every change arrives once in order, the endpoints answer,
// SIGTERM exits 0 promptly, and a restart resumes without loss.
func TestDaemonPostgresToKinesis(t *testing.T) {
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dbName, stream := testenv.UniqueName("e2e"), testenv.UniqueName("e2e")
	if err := pg.CreateDatabase(ctx, dbName); err != nil {
		t.Fatal(err)
	}
	if err := kin.CreateStream(ctx, stream, 2); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, pg.URL(dbName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	mustExec(t, db, `CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text)`,
		`INSERT INTO items SELECT g, 0, 'seed' FROM generate_series(1, 50) g`)

	work := t.TempDir()
	env := []string{
		"CDCBRIDGE_SOURCE=postgres", "CDCBRIDGE_POSTGRES_URL=" + pg.URL(dbName), "CDCBRIDGE_POSTGRES_SLOT=" + testenv.UniqueName("slot"), "CDCBRIDGE_KINESIS_STREAM=" + stream,
		"CDCBRIDGE_CHECKPOINT_STORE=file://" + filepath.Join(work, "cp.json"), "CDCBRIDGE_DLQ_DIR=" + filepath.Join(work, "dlq"),
		"AWS_ENDPOINT_URL_KINESIS=" + kin.Endpoint, "CDCBRIDGE_SHUTDOWN_TIMEOUT=10s",
	}
	b := startBridge(t, env)
	b.waitReady(60 * time.Second)
	if code, body := b.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	if code, body := b.get("/metrics"); code != http.StatusOK || !bytes.Contains(body, []byte("cdcbridge_lag_seconds")) || !bytes.Contains(body, []byte("go_goroutines")) {
		t.Fatalf("/metrics = %d:\n%.500s", code, body)
	}
	var status map[string]any
	if code, body := b.get("/status"); code != http.StatusOK || json.Unmarshal(body, &status) != nil || status["source"] == nil || status["sink"] == nil {
		t.Fatalf("/status = %d %s", code, body)
	}

	// The initial snapshot (50 read events) is delivered before the changes
	// start, so that the stop below falls into streaming, not the snapshot
	// (a snapshot cut short is read again, and changes made meanwhile then
	// arrive as its rows' final state).
	b.waitMetric("cdcbridge_events_delivered_total", 50, 60*time.Second)

	// Updates of each row in increasing v: order per row is checkable.
	for round := 1; round <= 5; round++ {
		mustExec(t, db, fmt.Sprintf(`UPDATE items SET v = %d WHERE id %% 5 = %d OR %d = 5`, round, round%5, round))
	}
	mustExec(t, db, `DELETE FROM items WHERE id = 50`)
	err, took := b.stop(20 * time.Second)
	if err != nil {
		t.Fatalf("SIGTERM: exit %v after %s, want status 0\n%s", err, took, b.log())
	}
	if strings.Contains(b.log(), "password") {
		t.Errorf("log mentions a password")
	}

	// More changes while it is down, then a restart picks them up.
	mustExec(t, db, `INSERT INTO items VALUES (51, 1, 'after restart')`)
	b2 := startBridge(t, env)
	b2.waitReady(60 * time.Second)
	want := 50 + 50 + 10*4 + 1 + 1 // reads + round-5 updates + 4 rounds of 10 rows + delete + insert
	recs := waitForRecords(t, ctx, kin, stream, want, b2)
	if err, _ := b2.stop(20 * time.Second); err != nil {
		t.Fatalf("second SIGTERM: %v\n%s", err, b2.log())
	}

	rep, first := verify.Check(recs)
	if rep.Invalid > 0 || len(rep.OrderViolations) > 0 || len(rep.DuplicateDiffer) > 0 {
		t.Fatalf("stream check: %+v", rep)
	}
	if len(first) != want {
		ops := map[string]int{}
		for _, e := range first {
			ops[e.Op.String()]++
		}
		t.Fatalf("distinct events = %d %v, want %d\nfirst run:\n%s\nsecond run:\n%s", len(first), ops, want, b.log(), b2.log())
	}
	checkTail(t, env, first)

	// The last event of each row carries the row's final state.
	lastV := map[string]string{}
	for _, r := range recs {
		if r.Event != nil && r.Event.After != nil {
			lastV[r.Event.PartitionKey] = string(r.Event.After)
		}
	}
	var v int
	if err := db.QueryRow(ctx, `SELECT v FROM items WHERE id = 7`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if got := lastV[`public.items:[7]`]; !strings.Contains(got, fmt.Sprintf(`"v":%d`, v)) {
		t.Errorf("last image of row 7 = %s, table has v=%d", got, v)
	}
}

func waitForRecords(t *testing.T, ctx context.Context, kin *testenv.Kinesis, stream string, want int, b *bridge) []verify.Record {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		recs, err := verify.ReadAll(ctx, kin.Client(), stream)
		if err != nil {
			t.Fatal(err)
		}
		_, first := verify.Check(recs)
		if len(first) >= want || time.Now().After(deadline) {
			return recs
		}
		select {
		case err := <-b.exited:
			t.Fatalf("cdcbridge exited: %v\n%s", err, b.log())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func mustExec(t *testing.T, db *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := db.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// TestCheck runs `cdcbridge check` against real servers, passing and failing.
func TestCheck(t *testing.T) {
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := testenv.UniqueName("check")
	if err := kin.CreateStream(ctx, stream, 1); err != nil {
		t.Fatal(err)
	}
	base := []string{"PATH=" + os.Getenv("PATH"), "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_ENDPOINT_URL_KINESIS=" + kin.Endpoint,
		"CDCBRIDGE_SOURCE=postgres", "CDCBRIDGE_POSTGRES_SLOT=" + testenv.UniqueName("check"),
		"CDCBRIDGE_CHECKPOINT_STORE=file://" + filepath.Join(t.TempDir(), "cp.json")}
	run := func(env ...string) (int, string) {
		cmd := exec.Command(buildBinary(t), "check")
		cmd.Env = append(append([]string{}, base...), env...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	code, out := run("CDCBRIDGE_KINESIS_STREAM="+stream, "CDCBRIDGE_POSTGRES_URL="+pg.URL("postgres"))
	if code != 0 || regexp.MustCompile(`(?m)^fail\s`).MatchString(out) {
		t.Fatalf("check on a good set-up: exit %d\n%s", code, out)
	}
	for _, want := range []string{"ok    kinesis stream", "ok    kinesis put permission", "ok    checkpoint store", "postgres", "ok    kinesis aggregation    off"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	code, out = run("CDCBRIDGE_KINESIS_STREAM="+stream, "CDCBRIDGE_POSTGRES_URL="+pg.URL("postgres"), "CDCBRIDGE_KINESIS_AGGREGATE=hot")
	if code != 0 || !regexp.MustCompile(`ok\s+kinesis aggregation\s+hot: .*consumers must de-aggregate`).MatchString(out) {
		t.Errorf("check with CDCBRIDGE_KINESIS_AGGREGATE=hot: exit %d, no line saying consumers must de-aggregate:\n%s", code, out)
	}
	code, out = run("CDCBRIDGE_KINESIS_STREAM="+stream, "CDCBRIDGE_POSTGRES_URL="+pg.URL("postgres"), "CDCBRIDGE_KINESIS_AGGREGATE=hot", "CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip")
	if code != 0 || !regexp.MustCompile(`ok\s+kinesis aggregation\s+hot: .*gzipped; consumers must gunzip`).MatchString(out) {
		t.Errorf("check with CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip: exit %d, no line saying consumers must gunzip:\n%s", code, out)
	}
	code, out = run("CDCBRIDGE_KINESIS_STREAM=missing-"+stream, "CDCBRIDGE_POSTGRES_URL=postgres://postgres:hunter2@127.0.0.1:1/none?connect_timeout=2")
	if code != 1 || !strings.Contains(out, "fail  kinesis stream") || !strings.Contains(out, "does not exist") {
		t.Fatalf("check on a missing stream: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("check printed the password:\n%s", out)
	}
	if !strings.Contains(out, "fail  postgres") {
		t.Errorf("unreachable Postgres not reported as failing:\n%s", out)
	}
}

// checkTail runs `cdcbridge tail` and checks it prints exactly the distinct
// events the independent reader found, each once.
func checkTail(t *testing.T, env []string, first map[string]*cdc.Event) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), "tail")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true"}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cdcbridge tail: %v\n%s", err, stderr.String())
	}
	seen := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		e, err := cdc.Decode(line)
		if err != nil {
			t.Fatalf("tail printed a non-envelope: %v\n%s", err, line)
		}
		k := e.Source + " " + e.ID
		if seen[k] {
			t.Fatalf("tail printed %s twice", e.ID)
		}
		seen[k] = true
		if first[k] == nil {
			t.Fatalf("tail printed %s, which the stream does not hold", e.ID)
		}
	}
	if len(seen) != len(first) {
		t.Fatalf("tail printed %d events, the stream holds %d distinct ones (stderr: %s)", len(seen), len(first), stderr.String())
	}
}
