package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// pgSettings are the benchmark cluster's settings beyond testenv's
// (wal_level=logical, fsync=off, loopback only). The WAL of the whole run
// stays in pg_wal while slots hold it; a large max_wal_size keeps
// checkpoints out of the measurements.
var pgSettings = map[string]string{
	"max_wal_size":       "8GB",
	"checkpoint_timeout": "30min",
	"shared_buffers":     "256MB",
}

// shownSettings are printed and recorded with the results.
var shownSettings = []string{
	"server_version", "wal_level", "fsync", "synchronous_commit", "shared_buffers",
	"logical_decoding_work_mem", "max_wal_size", "wal_compression", "max_wal_senders",
}

func startPostgres(ctx context.Context) (*testenv.Postgres, *pgx.Conn, map[string]string, error) {
	pg, err := testenv.StartPostgres(testenv.PostgresOptions{Settings: pgSettings})
	if err != nil {
		return nil, nil, nil, err
	}
	if err := pg.CreateDatabase(ctx, database); err != nil {
		pg.Stop()
		return nil, nil, nil, err
	}
	conn, err := pgx.Connect(ctx, pg.URL(database))
	if err != nil {
		pg.Stop()
		return nil, nil, nil, err
	}
	settings := map[string]string{}
	for _, name := range shownSettings {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			conn.Close(ctx)
			pg.Stop()
			return nil, nil, nil, err
		}
		settings[name] = v
	}
	return pg, conn, settings, nil
}

func execAll(ctx context.Context, conn *pgx.Conn, stmts ...string) error {
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(s)[0], err)
		}
	}
	return nil
}

func createSlot(ctx context.Context, conn *pgx.Conn, name string) error {
	_, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, name)
	return err
}

// copySlot makes a new slot at the same position as src.
func copySlot(ctx context.Context, conn *pgx.Conn, src, dst string) error {
	_, err := conn.Exec(ctx, `SELECT pg_copy_logical_replication_slot($1, $2)`, src, dst)
	return err
}

// dropSlot drops a slot, waiting for a walsender that still holds it to
// notice its client left.
func dropSlot(ctx context.Context, conn *pgx.Conn, name string) error {
	var err error
	for range 100 {
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
		if err == nil || !strings.Contains(err.Error(), "is active") {
			return err
		}
		if serr := backoff.Wait(ctx, 100*time.Millisecond); serr != nil {
			return serr
		}
	}
	return err
}

func insertLSN(ctx context.Context, conn *pgx.Conn) (string, error) {
	var lsn string
	err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn)
	return lsn, err
}

// walsenderPID returns the pid of the walsender streaming from slot, once
// it is active (0 after timeout).
func walsenderPID(ctx context.Context, conn *pgx.Conn, slot string, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var pid *int32
		err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
		if err == nil && pid != nil {
			return int(*pid)
		}
		if backoff.Wait(ctx, 5*time.Millisecond) != nil {
			return 0
		}
	}
	return 0
}

// ceilingRun is one pg_recvlogical drain.
type ceilingRun struct {
	Seconds          float64 `json:"seconds"`
	ChangesPerSecond float64 `json:"changes_per_second"`
	WalsenderCPU     float64 `json:"walsender_cpu_seconds"`
	ClientCPU        float64 `json:"client_cpu_seconds"`
	LoadAverage      float64 `json:"load_average_1m"`
}

// runCeiling drains slot (a copy of the bridge's) with pg_recvlogical and
// pgoutput into /dev/null up to endpos, the rate at which PostgreSQL
// itself decodes and sends the changes: no bridge reading the same slot
// can be faster.
func (b *bench) runCeiling(ctx context.Context, slot, endpos string, changes int) (ceilingRun, error) {
	bin := filepath.Join(testenv.DefaultPostgresBinDir, "pg_recvlogical")
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("pg_recvlogical"); err != nil {
			return ceilingRun{}, fmt.Errorf("pg_recvlogical not found: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, bin, "-d", b.pg.URL(database), "--slot", slot, "--start",
		"--endpos", endpos, "--no-loop", "-o", "proto_version=1", "-o", "publication_names="+publication,
		"-f", "/dev/null")
	start := time.Now()
	c, err := startChild("pg_recvlogical", cmd, filepath.Join(b.work, "pg_recvlogical.log"))
	if err != nil {
		return ceilingRun{}, err
	}
	wpid := walsenderPID(ctx, b.conn, slot, 10*time.Second)
	var wal procStat
	// The walsender exits with its client: sample it until then.
	for c.running() {
		if wpid != 0 {
			if st, err := readProc(wpid); err == nil {
				wal = st
			}
		}
		select {
		case <-c.exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	if c.err != nil {
		return ceilingRun{}, fmt.Errorf("pg_recvlogical: %v\n%s", c.err, c.logTail(10))
	}
	r := ceilingRun{Seconds: elapsed.Seconds(), ChangesPerSecond: float64(changes) / elapsed.Seconds(), WalsenderCPU: wal.CPUSeconds, LoadAverage: loadAverage()}
	if ps := c.cmd.ProcessState; ps != nil {
		r.ClientCPU = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return r, nil
}
