package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The workload's shape. Every change is a row change the bridge emits as
// one event; the counts add up to Options.changes.
const (
	database    = "bench"
	publication = "bench"
	streamName  = "bench"

	distinctKeys = 100_000 // rows of bench_items; the big transaction inserts them
	hotKeys      = 10      // ids 0..9
	hotChanges   = 1_000   // single-row updates per hot key
	batchRows    = 100     // rows per multi-row transaction
)

// schema creates two tables of rows of about 200 bytes (their JSON form
// is about 230 bytes) and the publication, before any slot exists.
var schema = []string{
	`CREATE TABLE bench_items (
		id bigint PRIMARY KEY,
		account integer NOT NULL,
		status text NOT NULL,
		amount numeric(12,2) NOT NULL,
		updated_at timestamptz NOT NULL,
		note text NOT NULL)`,
	`CREATE TABLE bench_big (LIKE bench_items INCLUDING ALL)`,
	`CREATE PUBLICATION ` + publication + ` FOR TABLE bench_items, bench_big`,
}

// rowSelect produces rows of the benchmark's shape from generate_series g.
const rowSelect = `SELECT g, (g % 1000)::int, 'new', (g % 100000) / 100.0, now(),
	md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) || md5((g + 3)::text) FROM generate_series`

// backlogPlan says how the backlog's changes are made.
type backlogPlan struct {
	Total         int `json:"total_changes"`
	BigTx         int `json:"one_transaction_rows"`   // one INSERT transaction of all distinct keys
	Batches       int `json:"multi_row_transactions"` // UPDATE transactions of batchRows rows
	BatchRows     int `json:"rows_per_multi_row_transaction"`
	Singles       int `json:"single_row_transactions"` // UPDATE transactions of one row
	HotKeys       int `json:"hot_keys"`
	HotChanges    int `json:"changes_per_hot_key"`
	DistinctKeys  int `json:"distinct_keys"`
	RowBytesAbout int `json:"row_bytes_about"`
}

// planBacklog splits total changes: one 100,000-row transaction (capped
// at total), 10% single-row transactions (10,000 of them on the hot
// keys when total allows) and the rest as 100-row transactions.
func planBacklog(total int) backlogPlan {
	p := backlogPlan{BatchRows: batchRows, DistinctKeys: distinctKeys, HotKeys: hotKeys, RowBytesAbout: 200}
	p.BigTx = min(distinctKeys, total)
	rest := total - p.BigTx
	p.Singles = rest / 9
	p.HotChanges = min(hotChanges, p.Singles/hotKeys)
	p.Batches = (rest - p.Singles) / batchRows
	p.Singles = rest - p.Batches*batchRows // the remainder goes to single rows
	p.Total = p.BigTx + p.Batches*batchRows + p.Singles
	return p
}

func updateSQL(ids []int64) string {
	var b strings.Builder
	b.WriteString("UPDATE bench_items SET amount = amount + 1, status = 'paid', updated_at = now() WHERE id ")
	if len(ids) == 1 {
		b.WriteString("= ")
		b.WriteString(strconv.FormatInt(ids[0], 10))
		return b.String()
	}
	b.WriteString("IN (")
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.WriteByte(')')
	return b.String()
}

// coldKeys draws n distinct ids that are not hot keys.
func coldKeys(rng *rand.Rand, n int, into []int64) []int64 {
	into = into[:0]
	seen := make(map[int64]bool, n)
	for len(into) < n {
		id := int64(hotKeys + rng.IntN(distinctKeys-hotKeys))
		if !seen[id] {
			seen[id] = true
			into = append(into, id)
		}
	}
	return into
}

// loadBacklog commits the plan's transactions: first the big one, then the
// multi-row and single-row transactions interleaved evenly, hot keys
// spread through the single-row ones. Statements travel many to a round
// trip, each wrapped in its own BEGIN/COMMIT so that each is its own
// transaction.
func loadBacklog(ctx context.Context, conn *pgx.Conn, p backlogPlan) error {
	if _, err := conn.Exec(ctx, `INSERT INTO bench_items `+rowSelect+`(0, $1) g`, p.BigTx-1); err != nil {
		return fmt.Errorf("big transaction: %w", err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		sql      strings.Builder
		stmts    int
		ids      []int64
		hotDone  int
		single   int
		hotTotal = p.HotKeys * p.HotChanges
	)
	flush := func() error {
		if stmts == 0 {
			return nil
		}
		if err := conn.PgConn().Exec(ctx, sql.String()).Close(); err != nil {
			return err
		}
		sql.Reset()
		stmts = 0
		return nil
	}
	add := func(s string) error {
		sql.WriteString("BEGIN;")
		sql.WriteString(s)
		sql.WriteString(";COMMIT;")
		if stmts++; stmts >= 200 {
			return flush()
		}
		return nil
	}
	// Singles due after batch i: evenly spread, hot ones every
	// Singles/hotTotal singles.
	hotEvery := 0
	if hotTotal > 0 {
		hotEvery = p.Singles / hotTotal
	}
	nextSingle := func() []int64 {
		defer func() { single++ }()
		if hotEvery > 0 && single%hotEvery == 0 && hotDone < hotTotal {
			id := int64(hotDone % p.HotKeys)
			hotDone++
			return append(ids[:0], id)
		}
		return coldKeys(rng, 1, ids)
	}
	for i := range p.Batches {
		if err := add(updateSQL(coldKeys(rng, batchRows, ids))); err != nil {
			return err
		}
		due := (i + 1) * p.Singles / max(p.Batches, 1)
		for single < due {
			if err := add(updateSQL(nextSingle())); err != nil {
				return err
			}
		}
	}
	for single < p.Singles {
		if err := add(updateSQL(nextSingle())); err != nil {
			return err
		}
	}
	return flush()
}

// steadyLoad commits transactions of rowsPerTx single-row updates at a
// steady rate of changes per second until ctx ends, and returns how many
// changes it committed. When it falls behind, the due transactions go in
// one round trip.
func steadyLoad(ctx context.Context, conn *pgx.Conn, perSecond, rowsPerTx int) (int, error) {
	rng := rand.New(rand.NewPCG(3, 4))
	txPerSecond := float64(perSecond) / float64(rowsPerTx)
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := 0
	var ids []int64
	var sql strings.Builder
	for {
		select {
		case <-ctx.Done():
			return sent * rowsPerTx, nil
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds() * txPerSecond)
		if due <= sent {
			continue
		}
		sql.Reset()
		for ; sent < due; sent++ {
			ids = coldKeys(rng, rowsPerTx, ids)
			sql.WriteString("BEGIN;")
			sql.WriteString(updateSQL(ids))
			sql.WriteString(";COMMIT;")
		}
		if err := conn.PgConn().Exec(ctx, sql.String()).Close(); err != nil {
			if ctx.Err() != nil {
				return sent * rowsPerTx, nil
			}
			return sent * rowsPerTx, err
		}
	}
}

// loadBigTransaction inserts n rows into bench_big in one transaction.
func loadBigTransaction(ctx context.Context, conn *pgx.Conn, n int) error {
	_, err := conn.Exec(ctx, `INSERT INTO bench_big `+rowSelect+`(1, $1) g`, n)
	return err
}
