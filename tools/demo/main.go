// Command demo shows cdcbridge end to end on local stand-ins: a throwaway
// PostgreSQL 15 and kinesalite. It is what `make demo` runs.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(root, "bin", "cdcbridge")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s missing: run make build first", bin)
	}

	step("Starting a throwaway PostgreSQL 15 (wal_level=logical)")
	pg, err := testenv.StartPostgres(testenv.PostgresOptions{})
	if err != nil {
		return err
	}
	defer pg.Stop()
	fmt.Println("    ", pg.URL("postgres"), "data in", pg.Dir)

	step("Starting kinesalite (a Kinesis emulator) and creating stream 'demo' with 2 shards")
	kin, err := testenv.StartKinesalite()
	if err != nil {
		return err
	}
	defer kin.Stop()
	if err := kin.CreateStream(ctx, "demo", 2); err != nil {
		return err
	}
	fmt.Println("    ", kin.Endpoint)

	step("Creating table public.orders with two existing rows (they arrive as snapshot 'read' events)")
	db, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return err
	}
	defer db.Close(context.Background())
	if err := exec1(ctx, db,
		`CREATE TABLE public.orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(12,2), note jsonb, updated timestamptz DEFAULT now())`,
		`INSERT INTO public.orders (id, status, amount) VALUES (1, 'new', 10.50), (2, 'new', 99.99)`,
	); err != nil {
		return err
	}

	work, err := os.MkdirTemp("", "cdcbridge-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	env := []string{
		"CDCBRIDGE_SOURCE=postgres",
		"CDCBRIDGE_POSTGRES_URL=" + pg.URL("postgres"),
		"CDCBRIDGE_POSTGRES_TABLES=public.orders",
		"CDCBRIDGE_KINESIS_STREAM=demo",
		"CDCBRIDGE_CHECKPOINT_STORE=file://" + filepath.Join(work, "checkpoints.json"),
		"CDCBRIDGE_DLQ_DIR=" + filepath.Join(work, "dlq"),
		"CDCBRIDGE_HTTP_ADDR=" + httpAddr,
		"CDCBRIDGE_LOG_FORMAT=text",
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=demo",
		"AWS_SECRET_ACCESS_KEY=demo",
		"AWS_ENDPOINT_URL_KINESIS=" + kin.Endpoint,
	}
	step("Starting cdcbridge with:")
	for _, e := range env {
		if strings.HasPrefix(e, "CDCBRIDGE_") || strings.HasPrefix(e, "AWS_ENDPOINT") {
			fmt.Println("    ", e)
		}
	}
	logPath := filepath.Join(work, "cdcbridge.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	daemon := exec.Command(bin)
	daemon.Env = append(os.Environ(), env...)
	daemon.Stdout, daemon.Stderr = logFile, logFile
	if err := daemon.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	defer func() {
		if daemon.ProcessState == nil {
			_ = daemon.Process.Kill()
		}
	}()
	if err := waitReady(ctx, "http://"+httpAddr+"/readyz", exited); err != nil {
		return fmt.Errorf("%w\n--- cdcbridge log ---\n%s", err, tail(logPath))
	}
	fmt.Println("     /readyz answered 200")

	// Ready means connected, not streaming: changes made before the slot
	// exists would land in the snapshot (or, for the truncate, erase it).
	step("Waiting for the snapshot: the two existing rows as 'read' events")
	metricsURL := "http://" + httpAddr + "/metrics"
	if err := waitDelivered(ctx, metricsURL, 2); err != nil {
		return fmt.Errorf("%w\n--- cdcbridge log ---\n%s", err, tail(logPath))
	}

	step("Changing data: insert, updates (one changes the key), a delete, a message, a truncate")
	stmts := []string{
		`INSERT INTO public.orders (id, status, amount, note) VALUES (3, 'new', 5, '{"gift": true}')`,
		`UPDATE public.orders SET status = 'paid' WHERE id = 1`,
		`UPDATE public.orders SET status = 'shipped' WHERE id = 1`,
		`UPDATE public.orders SET id = 20 WHERE id = 2`,
		`DELETE FROM public.orders WHERE id = 3`,
		`SELECT pg_logical_emit_message(true, 'demo', 'hello from a transaction')`,
		`TRUNCATE public.orders`,
	}
	for _, s := range stmts {
		fmt.Println("     " + s)
	}
	if err := exec1(ctx, db, stmts...); err != nil {
		return err
	}

	step("Waiting until Kinesis accepted everything (cdcbridge_lag_seconds back to 0)")
	if err := waitDelivered(ctx, metricsURL, 10); err != nil {
		return fmt.Errorf("%w\n--- cdcbridge log ---\n%s", err, tail(logPath))
	}

	step("What the bridge wrote: cdcbridge tail (one CloudEvents envelope per line)")
	tailCmd := exec.CommandContext(ctx, bin, "tail")
	tailCmd.Env = daemon.Env
	out, err := tailCmd.Output()
	if err != nil {
		return fmt.Errorf("cdcbridge tail: %w", err)
	}
	printEvents(out)

	step("A few metrics from %s", metricsURL)
	if err := showMetrics(metricsURL); err != nil {
		return err
	}

	step("Stopping cdcbridge with SIGTERM (it flushes and saves its checkpoint)")
	_ = daemon.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		fmt.Printf("     exited: %v\n", exitText(err))
	case <-time.After(30 * time.Second):
		return errors.New("cdcbridge did not stop within 30s")
	}
	fmt.Println("\n--- last lines of the cdcbridge log ---")
	fmt.Println(tail(logPath))
	step("Cleaning up: stopping PostgreSQL and kinesalite, removing their files")
	return nil
}

func exec1(ctx context.Context, db *pgx.Conn, stmts ...string) error {
	for _, s := range stmts {
		if _, err := db.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitReady(ctx context.Context, url string, exited <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("cdcbridge exited during start-up: %v", exitText(err))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return errors.New("cdcbridge not ready after 60s")
}

// waitDelivered waits until at least want events were delivered and
// nothing is pending.
func waitDelivered(ctx context.Context, url string, want float64) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		m, err := scrape(url)
		if err == nil && m["cdcbridge_events_delivered_total"] >= want && m["cdcbridge_lag_seconds"] == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("fewer than %v events delivered after 60s", want)
}

// scrape sums each metric over its labels.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cdcbridge_") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		base, _, _ := strings.Cut(name, "{")
		var v float64
		fmt.Sscan(rest, &v)
		out[base] += v
	}
	return out, sc.Err()
}

func showMetrics(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		for _, p := range []string{"cdcbridge_events_received_total", "cdcbridge_events_delivered_total", "cdcbridge_kinesis_put_requests_total", "cdcbridge_lag_seconds", "cdcbridge_postgres_slot_lag_bytes"} {
			if strings.HasPrefix(line, p) {
				fmt.Println("     " + line)
			}
		}
	}
	return nil
}

// printEvents lists the events in source order (tail prints them shard by
// shard), one line each, then shows one whole envelope.
func printEvents(out []byte) {
	type row struct {
		seq, line string
		raw       []byte
	}
	var rows []row
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var e struct {
			Sequence     string `json:"sequence"`
			PartitionKey string `json:"partitionkey"`
			Data         struct {
				Op      string          `json:"op"`
				After   json.RawMessage `json:"after"`
				Message json.RawMessage `json:"message"`
			} `json:"data"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			fmt.Printf("     not an envelope: %s\n", line)
			continue
		}
		detail := e.Data.After
		if e.Data.Message != nil {
			detail = e.Data.Message
		}
		rows = append(rows, row{e.Sequence, fmt.Sprintf("%-9s %-22s %-26s %s", e.Data.Op, e.PartitionKey, e.Sequence, detail), line})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].seq < rows[j].seq })
	fmt.Printf("     %-9s %-22s %-26s %s\n", "OP", "PARTITION KEY", "SEQUENCE", "AFTER / MESSAGE")
	for _, r := range rows {
		fmt.Println("     " + r.line)
	}
	fmt.Printf("     (%d events)\n", len(rows))
	for _, r := range rows {
		if bytes.Contains(r.raw, []byte(`"op":"update"`)) {
			var pretty bytes.Buffer
			_ = json.Indent(&pretty, r.raw, "     ", "  ")
			fmt.Println("\n     One whole envelope (the first update):\n     " + pretty.String())
			break
		}
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
