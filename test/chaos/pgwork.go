package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

// PGWorkload writes a bounded, seeded mix of changes to one table and
// logs every committed change in Log: inserts, updates of a few hot rows
// and of many cold ones, deletes (and re-inserts of deleted keys), large
// rows and large transactions.
//
// Each worker owns the keys with id % Workers == its number, so it knows
// every row's version without reading it back. Every transaction also
// inserts its number into wl_tx (not published): after an error whose
// outcome is unknown (a connection lost during COMMIT), the worker
// reconnects and looks the number up, so the log holds exactly the
// transactions that committed.
type PGWorkload struct {
	URL     string
	Workers int // default 3
	Changes int // budget of changes (the last transaction may overshoot it)
	// TxPerSecond paces each worker (0: as fast as the server allows).
	TxPerSecond float64
	HotRows     int        // default 20
	HotShare    float64    // share of a small transaction's changes on hot rows (default 0.40)
	LargeProb   float64    // chance that a changed row gets a large value
	LargeSize   [2]int     // its size range in bytes (default 100-300 KiB)
	BigTxProb   float64    // chance that a transaction is a large one
	BigTxSize   [2]int     // rows inserted by a large transaction (half of them then updated)
	MaxTxOps    int        // most changes in a small transaction (default 5)
	Rand        *rand.Rand // the seeded source of every decision
	Log         *verify.Log
	// ExistingShare is the share of a small transaction's changes on the
	// rows Populate put in the table before the bridge started, and
	// RekeyProb the chance that such a change moves its row to a new key
	// (an UPDATE of the primary key).
	ExistingShare float64
	RekeyProb     float64

	existing []int64 // ids Populate inserted

	budget    atomic.Int64
	committed atomic.Int64
	ambiguous atomic.Int64
	nextTx    atomic.Int64
	touched   sync.Map // id -> struct{}
}

const pgTable = "public.items"

// PGSchema creates the workload's tables.
const PGSchema = `
CREATE TABLE items (id bigint PRIMARY KEY, ver bigint NOT NULL, pad text NOT NULL);
ALTER TABLE items REPLICA IDENTITY FULL;
CREATE TABLE wl_tx (n bigint PRIMARY KEY);`

func (w *PGWorkload) defaults() {
	if w.Workers == 0 {
		w.Workers = 3
	}
	if w.HotRows == 0 {
		w.HotRows = 20
	}
	if w.HotShare == 0 {
		w.HotShare = 0.40
	}
	if w.LargeSize == [2]int{} {
		w.LargeSize = [2]int{100 << 10, 300 << 10}
	}
	if w.MaxTxOps == 0 {
		w.MaxTxOps = 5
	}
	if w.BigTxSize == [2]int{} {
		w.BigTxSize = [2]int{500, 2000}
	}
}

// Setup creates the tables.
func (w *PGWorkload) Setup(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, w.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, PGSchema)
	return err
}

// Committed returns the number of changes committed so far.
func (w *PGWorkload) Committed() int64 { return w.committed.Load() }

// Ambiguous returns how many transactions ended with an unknown outcome
// that had to be looked up.
func (w *PGWorkload) Ambiguous() int64 { return w.ambiguous.Load() }

// Run writes until the budget is used up or ctx ends.
func (w *PGWorkload) Run(ctx context.Context) error {
	w.defaults()
	w.budget.Store(int64(w.Changes))
	return runWorkers(ctx, w.Workers, w.Rand, w.worker)
}

type pgRow struct {
	ver    int64
	exists bool
}

type pgOp struct {
	op    string // insert, update, delete, rekey
	id    int64
	ver   int64 // rekey: the moved row's new version (the old key is deleted at ver-1)
	pad   string
	newID int64 // rekey: the row's new key
}

// existingBase is where Populate's ids start: above every id the workers
// make, so the workers' new rows sort before them.
const existingBase = int64(1) << 40

func existingPad(id int64) string { return fmt.Sprintf("pre-%d", id) }

// Populate inserts n rows (version 0) before the bridge starts and logs
// them as existing. include tells which of them the consumer's copy must
// hold at the end (nil: all): a snapshot with a condition reads only some.
func (w *PGWorkload) Populate(ctx context.Context, n int, include func(id int64) bool) error {
	conn, err := pgx.Connect(ctx, w.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `INSERT INTO items (id, ver, pad) SELECT $1::bigint + g, 0, 'pre-' || ($1::bigint + g) FROM generate_series(1, $2::int) g`, existingBase, n); err != nil {
		return fmt.Errorf("populating: %w", err)
	}
	if _, err := conn.Exec(ctx, `ANALYZE items`); err != nil {
		return err
	}
	for g := int64(1); g <= int64(n); g++ {
		id := existingBase + g
		w.existing = append(w.existing, id)
		w.Log.AddExisting(verify.Change{Table: pgTable, Key: pgKey(id), Op: "read", Ver: 0, Digest: verify.PayloadDigest(existingPad(id))})
		if include == nil || include(id) {
			w.touched.Store(id, struct{}{})
		}
	}
	return nil
}

func (w *PGWorkload) worker(ctx context.Context, me int, rng *rand.Rand) error {
	rows := map[int64]*pgRow{}
	var cold []int64 // cold ids this worker created
	nextCold := int64(0)
	newCold := func() int64 {
		id := int64(w.HotRows) + 1 + nextCold*int64(w.Workers) + int64(me)
		nextCold++
		return id
	}
	var existing []int64
	for _, id := range w.existing {
		if id%int64(w.Workers) == int64(me) {
			existing = append(existing, id)
			rows[id] = &pgRow{ver: 0, exists: true}
		}
	}
	var hot []int64
	for id := int64(1); id <= int64(w.HotRows); id++ {
		if id%int64(w.Workers) == int64(me) {
			hot = append(hot, id)
		}
	}
	var pace *time.Ticker
	if w.TxPerSecond > 0 {
		pace = time.NewTicker(time.Duration(float64(time.Second) / w.TxPerSecond))
		defer pace.Stop()
	}
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	failures := 0
	for w.budget.Load() > 0 {
		if pace != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-pace.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		// Plan the transaction against a copy of the rows it touches.
		pending := map[int64]pgRow{}
		get := func(id int64) pgRow {
			if r, ok := pending[id]; ok {
				return r
			}
			if r, ok := rows[id]; ok {
				return *r
			}
			return pgRow{}
		}
		var ops []pgOp
		var bulk []int64
		big := rng.Float64() < w.BigTxProb
		if big {
			n := w.BigTxSize[0] + rng.IntN(w.BigTxSize[1]-w.BigTxSize[0]+1)
			for range n {
				bulk = append(bulk, newCold())
			}
			for _, id := range bulk {
				pending[id] = pgRow{ver: 1, exists: true}
			}
			for _, id := range bulk[:n/2] {
				pending[id] = pgRow{ver: 2, exists: true}
			}
		} else {
			for range 1 + rng.IntN(w.MaxTxOps) {
				var id int64
				switch x := rng.Float64(); {
				case x < w.ExistingShare && len(existing) > 0:
					id = existing[rng.IntN(len(existing))]
					if _, busy := pending[id]; busy {
						continue
					}
					if r := get(id); r.exists && rng.Float64() < w.RekeyProb {
						to := newCold()
						o := pgOp{op: "rekey", id: id, newID: to, ver: r.ver + 1, pad: randText(rng, 16+rng.IntN(200))}
						pending[id] = pgRow{ver: r.ver, exists: false}
						pending[to] = pgRow{ver: o.ver, exists: true}
						ops = append(ops, o)
						continue
					}
				case x < w.ExistingShare+w.HotShare && len(hot) > 0:
					id = hot[rng.IntN(len(hot))]
				case x < w.ExistingShare+w.HotShare+(1-w.HotShare-w.ExistingShare)*0.42 || len(cold) == 0:
					id = newCold()
				default:
					id = cold[rng.IntN(len(cold))]
				}
				r := get(id)
				o := pgOp{id: id, ver: r.ver + 1}
				switch {
				case !r.exists:
					o.op = "insert"
				case rng.Float64() < 0.15 && !isHot(id, w.HotRows):
					o.op, o.ver = "delete", r.ver
				default:
					o.op = "update"
				}
				if o.op != "delete" {
					size := 16 + rng.IntN(200)
					if rng.Float64() < w.LargeProb {
						size = w.LargeSize[0] + rng.IntN(w.LargeSize[1]-w.LargeSize[0]+1)
					}
					o.pad = randText(rng, size)
				}
				pending[id] = pgRow{ver: o.ver, exists: o.op != "delete"}
				ops = append(ops, o)
			}
		}
		changes := len(ops) + len(bulk) + len(bulk)/2
		for _, o := range ops {
			if o.op == "rekey" {
				changes++ // a delete and an insert
			}
		}
		w.budget.Add(-int64(changes))
		n := w.nextTx.Add(1)

		for {
			if conn == nil {
				c, err := pgx.Connect(ctx, w.URL)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					if failures++; failures > 600 {
						return fmt.Errorf("worker %d: cannot connect: %w", me, err)
					}
					sleep(ctx, 100*time.Millisecond)
					continue
				}
				conn = c
			}
			committed, err := w.exec(ctx, conn, n, ops, bulk)
			if err == nil && committed {
				failures = 0
				break
			}
			// The outcome is unknown: reconnect and look the number up.
			conn.Close(context.Background())
			conn = nil
			if ctx.Err() != nil {
				return nil
			}
			if failures++; failures > 600 {
				return fmt.Errorf("worker %d: transaction %d keeps failing: %w", me, n, err)
			}
			w.ambiguous.Add(1)
			done, lerr := w.lookup(ctx, n)
			if lerr != nil {
				if ctx.Err() != nil {
					return nil
				}
				sleep(ctx, 100*time.Millisecond)
				// Still unknown: look again before trying anything else.
				for lerr != nil && ctx.Err() == nil {
					done, lerr = w.lookup(ctx, n)
					if lerr != nil {
						sleep(ctx, 200*time.Millisecond)
					}
				}
				if ctx.Err() != nil {
					return nil
				}
			}
			if done {
				break
			}
			// Not committed: the same plan is tried again under a new number.
			n = w.nextTx.Add(1)
		}
		// Committed: log it and apply it.
		var log []verify.Change
		for _, o := range ops {
			if o.op == "rekey" {
				log = append(log,
					verify.Change{Table: pgTable, Key: pgKey(o.id), Op: "delete", Ver: o.ver - 1},
					verify.Change{Table: pgTable, Key: pgKey(o.newID), Op: "insert", Ver: o.ver, Digest: verify.PayloadDigest(o.pad)})
				w.touched.Store(o.id, struct{}{})
				w.touched.Store(o.newID, struct{}{})
				cold = append(cold, o.newID)
				continue
			}
			c := verify.Change{Table: pgTable, Key: pgKey(o.id), Op: o.op, Ver: o.ver}
			if o.op != "delete" {
				c.Digest = verify.PayloadDigest(o.pad)
			} else {
				c.Digest = "" // the before image holds the deleted version's payload
			}
			log = append(log, c)
			w.touched.Store(o.id, struct{}{})
			if o.op == "insert" && !isHot(o.id, w.HotRows) && rows[o.id] == nil {
				cold = append(cold, o.id)
			}
		}
		for i, id := range bulk {
			log = append(log, verify.Change{Table: pgTable, Key: pgKey(id), Op: "insert", Ver: 1, Digest: verify.PayloadDigest(bulkPad(id, 1))})
			if i < len(bulk)/2 {
				log = append(log, verify.Change{Table: pgTable, Key: pgKey(id), Op: "update", Ver: 2, Digest: verify.PayloadDigest(bulkPad(id, 2))})
			}
			w.touched.Store(id, struct{}{})
			cold = append(cold, id)
		}
		for id, r := range pending {
			rr := r
			rows[id] = &rr
		}
		now := time.Now()
		for i := range log {
			log[i].At = now
		}
		w.Log.Add(log...)
		w.committed.Add(int64(len(log)))
	}
	return nil
}

func isHot(id int64, hot int) bool { return id <= int64(hot) }

func pgKey(id int64) string { return verify.CanonicalKey(map[string]any{"id": id}) }

func bulkPad(id, ver int64) string { return fmt.Sprintf("bulk-%d-%d", id, ver) }

// exec runs one transaction; committed is true only when COMMIT succeeded.
func (w *PGWorkload) exec(ctx context.Context, conn *pgx.Conn, n int64, ops []pgOp, bulk []int64) (bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(context.Background())
	for _, o := range ops {
		switch o.op {
		case "insert":
			_, err = tx.Exec(ctx, `INSERT INTO items (id, ver, pad) VALUES ($1, $2, $3)`, o.id, o.ver, o.pad)
		case "update":
			_, err = tx.Exec(ctx, `UPDATE items SET ver = $2, pad = $3 WHERE id = $1`, o.id, o.ver, o.pad)
		case "delete":
			_, err = tx.Exec(ctx, `DELETE FROM items WHERE id = $1`, o.id)
		case "rekey":
			_, err = tx.Exec(ctx, `UPDATE items SET id = $4, ver = $2, pad = $3 WHERE id = $1`, o.id, o.ver, o.pad, o.newID)
		}
		if err != nil {
			return false, fmt.Errorf("%s %d: %w", o.op, o.id, err)
		}
	}
	if len(bulk) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO items (id, ver, pad) SELECT g, 1, 'bulk-' || g || '-1' FROM unnest($1::bigint[]) g`, bulk); err != nil {
			return false, fmt.Errorf("bulk insert: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE items SET ver = 2, pad = 'bulk-' || id || '-2' WHERE id = ANY($1::bigint[])`, bulk[:len(bulk)/2]); err != nil {
			return false, fmt.Errorf("bulk update: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO wl_tx (n) VALUES ($1)`, n); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, err
	}
	return true, nil
}

func (w *PGWorkload) lookup(ctx context.Context, n int64) (bool, error) {
	c, err := pgx.Connect(ctx, w.URL)
	if err != nil {
		return false, err
	}
	defer c.Close(context.Background())
	var ok bool
	err = c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM wl_tx WHERE n = $1)`, n).Scan(&ok)
	return ok, err
}

// Final reads every touched row's final version into the log, so Compare
// holds the stream against the table itself.
func (w *PGWorkload) Final(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, w.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id, ver FROM items`)
	if err != nil {
		return err
	}
	inTable := map[int64]int64{}
	for rows.Next() {
		var id, ver int64
		if err := rows.Scan(&id, &ver); err != nil {
			return err
		}
		inTable[id] = ver
	}
	if err := rows.Err(); err != nil {
		return err
	}
	w.touched.Range(func(k, _ any) bool {
		id := k.(int64)
		ver, ok := inTable[id]
		w.Log.SetFinal(pgTable, pgKey(id), ver, ok)
		return true
	})
	return nil
}

const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "

func randText(rng *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n)
	for i := 0; i < n; {
		x := rng.Uint64()
		for j := 0; j < 10 && i < n; j++ {
			b.WriteByte(letters[x%uint64(len(letters))])
			x /= uint64(len(letters))
			i++
		}
	}
	return b.String()
}

// sleep waits d or until ctx ends; the workloads check ctx themselves.
func sleep(ctx context.Context, d time.Duration) { _ = backoff.Wait(ctx, d) }
