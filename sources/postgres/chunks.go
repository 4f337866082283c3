package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// chunkBytes bounds the memory of a chunk's read events, whatever the
// size of its rows: a chunk of large rows has fewer than
// SnapshotChunkRows. With a sink budget, a chunk's memory counts in it
// from before it is read until its events are in the sink (where they
// count as records), and takes at most a quarter of it: at most two
// chunks are held at once, one on its way out and one read ahead.
const chunkBytes = 8 << 20

// eventOverhead is what a read event takes beside its images: the event,
// its strings and its entry in the chunk's index.
const eventOverhead = 320

// chunkCap is the most memory a chunk may take.
func (r *snapshots) chunkCap() int64 {
	c := int64(chunkBytes)
	if b := r.s.cfg.Budget; b != nil {
		c = min(c, max(b.InFlightBudget()/4, 64<<10))
	}
	return c
}

func (r *snapshots) reserve(ctx context.Context, n int64) error {
	if b := r.s.cfg.Budget; b != nil && n > 0 {
		return b.Reserve(ctx, n)
	}
	return nil
}

func (r *snapshots) unreserve(n int64) {
	if b := r.s.cfg.Budget; b != nil && n > 0 {
		b.Unreserve(n)
	}
}

// Table states in a snapshot job.
const (
	tablePending   = "pending"
	tableReading   = "reading"
	tableDone      = "done"
	tableRefused   = "refused"
	tableFailed    = "failed"
	tableCancelled = "cancelled"
)

// snapshotJob is one snapshot: the initial one, one asked for with
// `cdcbridge snapshot`, or the one after a lost slot. Jobs are kept with
// the slot's state and run one at a time, in the order they came.
type snapshotJob struct {
	ID        string `json:"id"`
	Where     string `json:"where,omitempty"`
	Requested string `json:"requested"`
	// AllTables: every published table, listed when the job starts.
	AllTables bool              `json:"all_tables,omitempty"`
	Tables    []*snapTableState `json:"tables"`
	Cancelled bool              `json:"cancelled,omitempty"`
	Finished  string            `json:"finished,omitempty"`
}

// snapTableState is a table's progress in a job.
type snapTableState struct {
	Name  string `json:"name"` // schema.table
	State string `json:"state"`
	// LastKey is the text of the key of the last row of the last chunk
	// whose rows were all accepted; the next chunk starts after it.
	LastKey [][]byte `json:"last_key,omitempty"`
	// Reread are the keys (as text) of rows to read again with a later
	// chunk: their read was dropped for a newer version that left
	// unchanged TOAST values out (see marks.go).
	Reread   [][][]byte `json:"reread,omitempty"`
	Rows     int64      `json:"rows"`
	Chunks   int64      `json:"chunks"`
	Note     string     `json:"note,omitempty"`
	Started  string     `json:"started,omitempty"`
	Finished string     `json:"finished,omitempty"`
	// Estimate is the table's row count from the statistics, for the
	// time left.
	Estimate int64 `json:"estimate,omitempty"`
}

func (j *snapshotJob) finished() bool { return j.Finished != "" }

func (j *snapshotJob) clone() *snapshotJob {
	c := *j
	c.Tables = make([]*snapTableState, len(j.Tables))
	for i, t := range j.Tables {
		tc := *t
		tc.LastKey = slices.Clone(t.LastKey)
		tc.Reread = slices.Clone(t.Reread)
		c.Tables[i] = &tc
	}
	return &c
}

func nowText() string { return time.Now().UTC().Format(time.RFC3339) }

// snapshots runs a slot's snapshot jobs during one session. The jobs are
// shared with the decoder (which adds the ones asked for through the
// stream) and the saver (which keeps them with the slot's state).
type snapshots struct {
	s      *Source
	pool   *pgxpool.Pool
	source string
	pubs   []string
	q      *queue
	// save stores the state now: after every chunk, so that a crash
	// reads at most the chunk in flight again.
	save func(context.Context)

	mu      sync.Mutex
	jobs    []*snapshotJob
	version uint64 // bumped on every change
	rate    map[string]float64
	wake    chan struct{}

	conn      *pgx.Conn
	blockSize uint64
	genCols   bool
}

func newSnapshots(s *Source, jobs []*snapshotJob) *snapshots {
	r := &snapshots{s: s, wake: make(chan struct{}, 1), rate: map[string]float64{}}
	for _, j := range jobs {
		r.jobs = append(r.jobs, j.clone())
	}
	return r
}

// export returns a copy of the jobs for the slot's state, and the version.
func (r *snapshots) export() ([]*snapshotJob, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*snapshotJob, 0, len(r.jobs))
	for _, j := range r.jobs {
		out = append(out, j.clone())
	}
	return out, r.version
}

// update changes the jobs under the lock.
func (r *snapshots) update(f func()) {
	r.mu.Lock()
	f()
	r.version++
	r.mu.Unlock()
	r.publishStatus()
}

// add queues a job (from a request in the stream); a repeated id is
// ignored, since a request may be decoded again after a restart.
func (r *snapshots) add(j *snapshotJob) bool {
	added := false
	r.update(func() {
		for _, old := range r.jobs {
			if old.ID == j.ID {
				return
			}
		}
		r.jobs = append(r.jobs, j)
		added = true
	})
	if added {
		signal(r.wake)
	}
	return added
}

// cancel marks a job cancelled; it stops after the chunk in flight.
func (r *snapshots) cancel(id string) bool {
	found := false
	r.update(func() {
		for _, j := range r.jobs {
			if j.ID == id && !j.finished() {
				j.Cancelled = true
				found = true
			}
		}
	})
	return found
}

// next returns the first unfinished job and its table in progress,
// finishing the jobs that have nothing left.
func (r *snapshots) next() (*snapshotJob, *snapTableState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.jobs {
		if j.finished() {
			continue
		}
		if j.AllTables {
			return j, nil
		}
		for _, t := range j.Tables {
			switch t.State {
			case tablePending, tableReading:
				if j.Cancelled {
					t.State = tableCancelled
					continue
				}
				return j, t
			}
		}
		j.Finished = nowText()
		r.version++
		r.s.log.Info("snapshot: finished", "id", j.ID, "summary", j.summary())
	}
	r.pruneFinished()
	return nil, nil
}

// keptFinished is how many finished jobs the state keeps for --status.
const keptFinished = 20

// pruneFinished forgets the oldest finished jobs beyond keptFinished.
// Called with r.mu held.
func (r *snapshots) pruneFinished() {
	finished := 0
	for _, j := range r.jobs {
		if j.finished() {
			finished++
		}
	}
	if finished <= keptFinished {
		return
	}
	drop := finished - keptFinished
	r.jobs = slices.DeleteFunc(r.jobs, func(j *snapshotJob) bool {
		if drop > 0 && j.finished() {
			drop--
			return true
		}
		return false
	})
	r.version++
}

func (j *snapshotJob) summary() string {
	var parts []string
	for _, t := range j.Tables {
		parts = append(parts, fmt.Sprintf("%s %s (%d rows)", t.Name, t.State, t.Rows))
	}
	return strings.Join(parts, ", ")
}

// run reads the jobs' tables, one chunk at a time, until ctx ends.
func (r *snapshots) run(ctx context.Context) {
	defer r.closeConn()
	r.publishStatus()
	for ctx.Err() == nil {
		job, t := r.next()
		r.publishStatus()
		if job == nil {
			r.save(ctx)
			r.closeConn()
			select {
			case <-r.wake:
			case <-ctx.Done():
			}
			continue
		}
		err := r.runTable(ctx, job, t)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			continue
		}
		r.closeConn()
		var pgErr *pgconn.PgError
		if t != nil && errors.As(err, &pgErr) && tableError(pgErr) {
			r.s.log.Error("snapshot: cannot read the table", "id", job.ID, "table", t.Name, "err", err)
			r.update(func() { t.State, t.Note, t.Finished = tableFailed, pgErr.Error(), nowText() })
			continue
		}
		r.s.log.Warn("snapshot: reading failed; trying again in 5s from the last delivered chunk", "id", job.ID, "err", err)
		select {
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
	}
}

// tableError reports errors that reading the table again cannot cure: the
// table or a column is gone, or the condition is not valid for it.
func tableError(e *pgconn.PgError) bool {
	return strings.HasPrefix(e.Code, "42") || strings.HasPrefix(e.Code, "22")
}

func (r *snapshots) closeConn() {
	if r.conn != nil {
		_ = r.conn.Close(context.Background())
		r.conn = nil
	}
}

func (r *snapshots) connect(ctx context.Context) error {
	if r.conn != nil {
		return nil
	}
	conn, err := connectNormal(ctx, r.s.cfg.URL)
	if err != nil {
		return err
	}
	var bs, version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_block_size')::int, current_setting('server_version_num')::int").Scan(&bs, &version); err != nil {
		_ = conn.Close(context.Background())
		return fmt.Errorf("snapshot: reading server settings: %w", err)
	}
	r.conn, r.blockSize, r.genCols = conn, uint64(bs), version >= 180000
	return nil
}

// runTable reads one table of job, or lists the tables of a job of every
// published table.
func (r *snapshots) runTable(ctx context.Context, job *snapshotJob, ts *snapTableState) error {
	if err := r.connect(ctx); err != nil {
		return err
	}
	tables, err := publishedTables(ctx, r.conn, r.pubs)
	if err != nil {
		return err
	}
	if ts == nil {
		r.update(func() {
			for _, t := range tables {
				job.Tables = append(job.Tables, &snapTableState{Name: t.schema + "." + t.name, State: tablePending})
			}
			job.AllTables = false
		})
		r.s.log.Info("snapshot: reading every published table", "id", job.ID, "tables", len(tables))
		return nil
	}
	i := slices.IndexFunc(tables, func(t snapTable) bool { return t.schema+"."+t.name == ts.Name })
	if i < 0 {
		r.refuse(job, ts, fmt.Sprintf("not in publication %s: its changes are not streamed", strings.Join(r.pubs, ",")))
		return nil
	}
	t := tables[i]
	rel, err := snapshotRelation(ctx, r.conn, r.pool, r.s.types, t, r.genCols)
	if err != nil {
		return err
	}
	if len(rel.keyIdx) == 0 {
		r.refuse(job, ts, "no primary key or replica identity index: its rows cannot be read in key order, nor told apart from the stream's changes; "+
			"give it a primary key (or REPLICA IDENTITY USING INDEX on a unique index)")
		return nil
	}
	if err := checkWhere(job.Where); err != nil {
		r.refuse(job, ts, err.Error())
		return nil
	}
	tq, err := r.tableQuery(ctx, t, rel, job.Where)
	if err != nil {
		return err
	}
	if ts.State == tablePending {
		var est int64
		_ = r.conn.QueryRow(ctx, "SELECT greatest(reltuples, 0)::int8 FROM pg_catalog.pg_class WHERE oid = $1::oid", int64(t.oid)).Scan(&est)
		r.update(func() { ts.State, ts.Started, ts.Estimate = tableReading, nowText(), est })
		r.s.log.Info("snapshot: table started", "id", job.ID, "table", ts.Name, "where", job.Where, "estimated_rows", est)
	} else {
		r.s.log.Info("snapshot: table resumed after the last delivered chunk", "id", job.ID, "table", ts.Name, "rows", ts.Rows, "chunks", ts.Chunks)
	}
	return r.readChunks(ctx, job, ts, tq)
}

func (r *snapshots) refuse(job *snapshotJob, ts *snapTableState, why string) {
	r.s.log.Error("snapshot: table refused", "id", job.ID, "table", ts.Name, "reason", why)
	r.update(func() { ts.State, ts.Note, ts.Finished = tableRefused, why, nowText() })
}

// tableQuery is how a table's chunks are read.
type tableQuery struct {
	rel   *relation
	first string // SQL of the first chunk ($1: the limit)
	next  string // SQL of the next ones ($1..$n: the last key, $n+1: the limit)
	// keyed returns the SQL that reads the rows of n keys (params: the
	// keys' columns, key after key).
	keyed func(n int) string
}

// maxReread bounds the keys one chunk reads again.
const maxReread = 1000

func (r *snapshots) tableQuery(ctx context.Context, t snapTable, rel *relation, where string) (*tableQuery, error) {
	keyTypes := make([]string, len(rel.keyIdx))
	for n, i := range rel.keyIdx {
		if err := r.conn.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute WHERE attrelid = $1::oid AND attname = $2`,
			int64(t.oid), rel.cols[i].name).Scan(&keyTypes[n]); err != nil {
			return nil, fmt.Errorf("snapshot: key type of %s.%s: %w", t.schema, rel.cols[i].name, err)
		}
	}
	var sel strings.Builder
	sel.WriteString("SELECT ")
	for i, c := range rel.cols {
		if i > 0 {
			sel.WriteString(", ")
		}
		sel.WriteString(quoteIdent(c.name))
	}
	sel.WriteString(" FROM ")
	if t.relkind != "p" {
		sel.WriteString("ONLY ") // inheritance children are published (and read) on their own
	}
	sel.WriteString(quoteIdent(t.schema) + "." + quoteIdent(t.name))
	var conds []string
	if t.filter != "" {
		conds = append(conds, t.filter)
	}
	if where != "" {
		conds = append(conds, "("+where+")")
	}
	var keys, params []string
	for n, i := range rel.keyIdx {
		keys = append(keys, quoteIdent(rel.cols[i].name))
		params = append(params, fmt.Sprintf("$%d::%s", n+1, keyTypes[n]))
	}
	build := func(after bool, limitParam int) string {
		c := slices.Clone(conds)
		if after {
			c = append(c, "("+strings.Join(keys, ", ")+") > ("+strings.Join(params, ", ")+")")
		}
		q := sel.String()
		if len(c) > 0 {
			q += " WHERE " + strings.Join(c, " AND ")
		}
		return q + " ORDER BY " + strings.Join(keys, ", ") + fmt.Sprintf(" LIMIT $%d", limitParam)
	}
	keyed := func(n int) string {
		tuples := make([]string, n)
		for k := range n {
			ps := make([]string, len(keyTypes))
			for c, typ := range keyTypes {
				ps[c] = fmt.Sprintf("$%d::%s", k*len(keyTypes)+c+1, typ)
			}
			tuples[k] = "(" + strings.Join(ps, ", ") + ")"
		}
		c := append(slices.Clone(conds), "("+strings.Join(keys, ", ")+") IN ("+strings.Join(tuples, ", ")+")")
		return sel.String() + " WHERE " + strings.Join(c, " AND ")
	}
	return &tableQuery{rel: rel, first: build(false, 1), next: build(true, len(keys)+1), keyed: keyed}, nil
}

// readChunks reads a table's chunks from its last delivered one. The next
// chunk is read while the previous one's rows are on their way, but it
// goes to the decoder only once they are all accepted and the progress is
// saved, so a crash reads at most one chunk again. Rows to read again
// (ts.Reread) are read with the next chunk, or on their own once the
// table's last chunk has been read.
func (r *snapshots) readChunks(ctx context.Context, job *snapshotJob, ts *snapTableState, tq *tableQuery) error {
	r.mu.Lock()
	from := slices.Clone(ts.LastKey)
	pending := slices.Clone(ts.Reread) // keys to read again, in no chunk in flight
	r.mu.Unlock()
	limit := r.s.cfg.SnapshotChunkRows
	capBytes := r.chunkCap()
	var prev, cur *chunkRun
	// The budget of a chunk that does not go out (an error, a cancel) is
	// returned here; release is idempotent.
	defer func() {
		for _, c := range []*chunkRun{prev, cur} {
			if c != nil {
				c.release()
			}
		}
	}()
	last := false // the table's last chunk has been read
	for {
		if r.isCancelled(job) {
			if prev != nil {
				_, _ = prev.wait(ctx)
			}
			r.update(func() { ts.State, ts.Finished = tableCancelled, nowText() })
			r.s.log.Info("snapshot: cancelled", "id", job.ID, "table", ts.Name)
			return nil
		}
		var w *window
		cur = nil
		if !last || len(pending) > 0 {
			again := slices.Clone(pending[:min(len(pending), maxReread)])
			pending = pending[len(again):]
			var err error
			if w, err = r.openWindow(ctx, tq.rel.id); err != nil {
				return err
			}
			if cur, err = r.readChunk(ctx, tq, chunkSpec{from: from, ranged: !last, reread: again, limit: limit}, capBytes); err != nil {
				r.discardWindow(ctx, w)
				return err
			}
		}
		if prev != nil {
			res, err := prev.wait(ctx)
			if err != nil {
				return err
			}
			if res.again {
				// Read the previous chunk again; this one came after it.
				pending = append(pending, prev.spec.reread...)
				if w != nil {
					r.discardWindow(ctx, w)
					cur.release()
					pending = append(pending, cur.spec.reread...)
				}
				if prev.spec.ranged {
					from, last = prev.spec.from, false
				}
				prev = nil
				continue
			}
			if len(res.reread) > 0 {
				r.s.log.Info("snapshot: reading rows again whose read was dropped for a newer version without its unchanged TOAST values", "id", job.ID, "table", ts.Name, "rows", len(res.reread))
			}
			pending = append(pending, res.reread...)
			waiting := slices.Clone(pending)
			if cur != nil {
				waiting = append(waiting, cur.spec.reread...)
			}
			p := prev
			r.update(func() {
				if p.spec.ranged {
					ts.LastKey = p.last
					ts.Chunks++
				}
				ts.Reread = waiting
				ts.Rows += int64(res.emitted)
			})
			r.s.m.snapRows.WithLabelValues(ts.Name).Add(float64(res.emitted))
			r.noteRate(ts.Name, p.read, p.rows)
			r.save(ctx)
			prev = nil
		}
		if cur == nil {
			if len(pending) > 0 {
				continue
			}
			break
		}
		c := cur.chunk // cur changes before the decoder runs this
		if err := r.control(ctx, func(ctx context.Context, d *decoder) error { return d.chunkArrived(ctx, w, c) }); err != nil {
			return err
		}
		prev = cur
		if !cur.spec.ranged || cur.rows < limit && !cur.cut {
			last = true
			continue
		}
		from = cur.last
		if cur.rows > 0 {
			limit = int(min(max(capBytes/(cur.mem/int64(cur.rows)+1), 1), int64(r.s.cfg.SnapshotChunkRows)))
		}
	}
	r.update(func() { ts.State, ts.Finished = tableDone, nowText() })
	r.save(ctx)
	r.s.log.Info("snapshot: table done", "id", job.ID, "table", ts.Name, "rows", ts.Rows, "chunks", ts.Chunks)
	return nil
}

// openWindow places a new window's low mark in the stream.
func (r *snapshots) openWindow(ctx context.Context, relID uint32) (*window, error) {
	w := &window{relID: relID, opened: make(chan struct{})}
	if err := r.control(ctx, func(_ context.Context, d *decoder) error { d.openWindow(w); return nil }); err != nil {
		return nil, err
	}
	select {
	case <-w.opened:
		return w, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// discardWindow closes a window whose chunk will not come: later windows
// would wait for it.
func (r *snapshots) discardWindow(ctx context.Context, w *window) {
	_ = r.control(ctx, func(_ context.Context, d *decoder) error { d.discardWindow(w); return nil })
}

func (r *snapshots) isCancelled(job *snapshotJob) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return job.Cancelled
}

// control runs f in the decoder's goroutine, in stream order.
func (r *snapshots) control(ctx context.Context, f func(context.Context, *decoder) error) error {
	r.q.tryPush(item{ctl: f})
	return ctx.Err()
}

// chunkSpec says what a chunk reads.
type chunkSpec struct {
	from   [][]byte   // the key it reads after (nil: the table's start)
	ranged bool       // it reads up to limit rows after from (else only reread)
	reread [][][]byte // keys of rows it reads again
	limit  int
}

// chunkRun is a chunk read and the means to learn its fate.
type chunkRun struct {
	chunk *chunk
	spec  chunkSpec
	last  [][]byte // its last row's key (of the rows after from)
	rows  int      // rows read after from (before any were dropped)
	mem   int64    // memory of its events
	cut   bool     // it ended at capBytes, not at the limit or the table's end
	read  time.Time
	// reserved is what it holds of the sink's budget until release.
	reserved atomic.Int64
	r        *snapshots
	// pending: rows not yet accepted or dropped, plus 1 until the
	// decoder is done with the chunk.
	pending atomic.Int64
	emitted int
	reread  [][][]byte // what the decoder dropped to read again
	result  chan chunkResult
}

// release returns the chunk's part of the sink's budget: once its
// events are in the sink, or when it does not go out.
func (c *chunkRun) release() {
	c.r.unreserve(c.reserved.Swap(0))
}

type chunkResult struct {
	emitted int
	again   bool
	reread  [][][]byte // keys of rows to read again
}

func (c *chunkRun) acked() {
	if c.pending.Add(-1) == 0 {
		c.result <- chunkResult{emitted: c.emitted, reread: c.reread}
	}
}

// wait returns once the chunk's rows are all accepted, or it must be read
// again.
func (c *chunkRun) wait(ctx context.Context) (chunkResult, error) {
	select {
	case res := <-c.result:
		return res, nil
	case <-ctx.Done():
		return chunkResult{}, ctx.Err()
	}
}

// markQuery is the chunk's first statement: it takes the transaction's
// snapshot, then reads where WAL insertion is (replay on a standby).
const markQuery = `SELECT pg_catalog.pg_current_snapshot()::text,
	(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_insert_lsn() END)::text`

// readChunk reads what spec asks for (the rows after from, at most limit
// and at most capBytes of events, and the rows to read again), in a
// transaction of its own, and builds them into read events placed at the
// chunk's high mark. It reserves capBytes of the sink's budget first, and
// keeps what the events take.
func (r *snapshots) readChunk(ctx context.Context, tq *tableQuery, spec chunkSpec, capBytes int64) (*chunkRun, error) {
	rel := tq.rel
	conn := r.conn
	if err := r.reserve(ctx, capBytes); err != nil {
		return nil, err
	}
	run, err := r.queryChunk(ctx, tq, spec, capBytes)
	if err == nil {
		if _, err = conn.Exec(ctx, "COMMIT"); err != nil {
			err = fmt.Errorf("snapshot of %s: %w", rel.qualified, err)
		}
	}
	if err != nil {
		r.unreserve(capBytes)
		if conn.PgConn().TxStatus() != 'I' {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
		return nil, err
	}
	// A single row larger than the rest of the cap is read whole; its
	// excess is charged once it is known.
	if run.mem < capBytes {
		r.unreserve(capBytes - run.mem)
	} else if err := r.reserve(ctx, run.mem-capBytes); err != nil {
		r.unreserve(capBytes)
		return nil, err
	}
	run.reserved.Store(run.mem)
	return run, nil
}

func (r *snapshots) queryChunk(ctx context.Context, tq *tableQuery, spec chunkSpec, capBytes int64) (*chunkRun, error) {
	if _, err := r.conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", tq.rel.qualified, err)
	}
	rel := tq.rel
	var snapText, lsnText string
	if err := r.conn.QueryRow(ctx, markQuery).Scan(&snapText, &lsnText); err != nil {
		return nil, fmt.Errorf("snapshot of %s: taking the low mark: %w", rel.qualified, err)
	}
	snap, err := parseXidSnapshot(snapText)
	if err != nil {
		return nil, err
	}
	insert, err := parseLSN(lsnText)
	if err != nil {
		return nil, err
	}
	high := highMark(insert, r.blockSize)
	run := &chunkRun{spec: spec, read: time.Now(), result: make(chan chunkResult, 1), r: r}
	c := &chunk{snap: snap, high: high, index: make(map[string]int, min(spec.limit, 1<<16))}
	c.done = func(emitted int, again bool) {
		run.release()
		if again {
			run.result <- chunkResult{again: true}
			return
		}
		run.emitted, run.reread = emitted, c.reread
		if run.pending.Add(-int64(len(c.events)-emitted)-1) == 0 {
			run.result <- chunkResult{emitted: emitted, reread: c.reread}
		}
	}
	run.chunk = c
	seq, hiStr := cdc.SnapshotSequence(high), formatLSN(high)
	var tup tuple
	// add builds a row into a read event and reports whether the chunk
	// is full.
	add := func(vals [][]byte) (bool, error) {
		tup.cols = tup.cols[:0]
		for _, v := range vals {
			if v == nil {
				tup.cols = append(tup.cols, tupleCol{kind: colNull})
			} else {
				tup.cols = append(tup.cols, tupleCol{kind: colText, data: v})
			}
		}
		e := &cdc.Event{
			Source: r.source, Subject: rel.qualified, Op: cdc.OpRead, Sequence: seq,
			Info: cdc.SourceInfo{Snapshot: true, ConsistentPoint: hiStr, Schema: rel.schema, Table: rel.table},
		}
		if err := buildImages(e, rel, images{key: &tup, after: &tup}); err != nil {
			return false, fmt.Errorf("snapshot of %s: %w", rel.qualified, err)
		}
		e.ID = cdc.SnapshotID(high, rel.qualified, e.PartitionKey)
		e.OnAck = run.acked
		key := make([][]byte, len(rel.keyIdx))
		run.mem += int64(len(e.After)+len(e.Key)+len(e.PartitionKey)+len(e.ID)) + eventOverhead
		for n, i := range rel.keyIdx {
			key[n] = slices.Clone(vals[i])
			run.mem += int64(len(key[n])) + 24
		}
		c.index[string(e.Key)] = len(c.events)
		c.events = append(c.events, e)
		c.keys = append(c.keys, key)
		run.last = key
		return run.mem >= capBytes, nil
	}
	if spec.ranged {
		sql, params := tq.first, [][]byte{}
		if spec.from != nil {
			sql, params = tq.next, slices.Clone(spec.from)
		}
		params = append(params, fmt.Appendf(nil, "%d", spec.limit))
		rr := r.conn.PgConn().ExecParams(ctx, sql, params, nil, nil, nil)
		for rr.NextRow() {
			full, err := add(rr.Values())
			if err != nil {
				rr.Close()
				return nil, err
			}
			run.rows++
			if full {
				run.cut = true // the rest of the result is read and discarded by Close
				break
			}
		}
		if _, err := rr.Close(); err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", rel.qualified, err)
		}
	}
	if len(spec.reread) > 0 {
		last := run.last
		var params [][]byte
		for _, k := range spec.reread {
			params = append(params, k...)
		}
		rr := r.conn.PgConn().ExecParams(ctx, tq.keyed(len(spec.reread)), params, nil, nil, nil)
		for rr.NextRow() {
			if _, err := add(rr.Values()); err != nil {
				rr.Close()
				return nil, err
			}
		}
		if _, err := rr.Close(); err != nil {
			return nil, fmt.Errorf("snapshot of %s: reading rows again: %w", rel.qualified, err)
		}
		run.last = last
	}
	run.pending.Store(int64(len(c.events)) + 1)
	return run, nil
}

// noteRate keeps a table's rows per second (smoothed) for the status.
func (r *snapshots) noteRate(table string, read time.Time, rows int) {
	el := time.Since(read).Seconds()
	if el <= 0 {
		return
	}
	r.mu.Lock()
	cur := float64(rows) / el
	if old, ok := r.rate[table]; ok {
		cur = 0.7*old + 0.3*cur
	}
	r.rate[table] = cur
	r.mu.Unlock()
}

// SnapshotTable is one table of a snapshot in /status and `cdcbridge
// snapshot --status`.
type SnapshotTable struct {
	Table    string   `json:"table"`
	State    string   `json:"state"`
	Rows     int64    `json:"rows"`
	Chunks   int64    `json:"chunks"`
	LastKey  []string `json:"last_key,omitempty"`
	RowsPerS float64  `json:"rows_per_second,omitempty"`
	Estimate int64    `json:"estimated_rows,omitempty"`
	Left     string   `json:"time_left,omitempty"`
	Note     string   `json:"note,omitempty"`
}

// SnapshotInfo is one snapshot in /status and `cdcbridge snapshot --status`.
type SnapshotInfo struct {
	ID        string          `json:"id"`
	Where     string          `json:"where,omitempty"`
	Requested string          `json:"requested"`
	Finished  string          `json:"finished,omitempty"`
	Cancelled bool            `json:"cancelled,omitempty"`
	Tables    []SnapshotTable `json:"tables"`
}

func jobInfos(jobs []*snapshotJob, rate map[string]float64) []SnapshotInfo {
	out := []SnapshotInfo{}
	for _, j := range jobs {
		info := SnapshotInfo{ID: j.ID, Where: j.Where, Requested: j.Requested, Finished: j.Finished, Cancelled: j.Cancelled, Tables: []SnapshotTable{}}
		for _, t := range j.Tables {
			st := SnapshotTable{Table: t.Name, State: t.State, Rows: t.Rows, Chunks: t.Chunks, Estimate: t.Estimate, Note: t.Note}
			for _, k := range t.LastKey {
				st.LastKey = append(st.LastKey, string(k))
			}
			if t.State == tableReading {
				st.RowsPerS = float64(int64(rate[t.Name]*10)) / 10
				if st.RowsPerS > 0 && t.Estimate > t.Rows {
					st.Left = (time.Duration(float64(t.Estimate-t.Rows)/st.RowsPerS) * time.Second).Round(time.Second).String()
				}
			}
			info.Tables = append(info.Tables, st)
		}
		out = append(out, info)
	}
	return out
}

// publishStatus refreshes what /status and the metrics show.
func (r *snapshots) publishStatus() {
	r.mu.Lock()
	infos := jobInfos(r.jobs, r.rate)
	inProgress, running := 0, 0
	for _, j := range r.jobs {
		if j.finished() {
			continue
		}
		running = 1
		for _, t := range j.Tables {
			if t.State == tableReading {
				inProgress++
			}
		}
	}
	r.mu.Unlock()
	r.s.m.snapRunning.Set(float64(running))
	r.s.m.snapTablesInProgress.Set(float64(inProgress))
	r.s.mu.Lock()
	r.s.snaps = infos
	r.s.mu.Unlock()
}

// snapshotRequest is a request that travels through the stream, as a
// transactional logical decoding message with the prefix snapshotPrefix.
type snapshotRequest struct {
	Op     string   `json:"op"` // "snapshot" or "cancel"
	Slot   string   `json:"slot"`
	ID     string   `json:"id"`
	Tables []string `json:"tables,omitempty"`
	Where  string   `json:"where,omitempty"`
	Time   string   `json:"time"`
}

// snapshotPrefix is the prefix of the bridge's own messages; they are not
// sent to the stream.
const snapshotPrefix = "cdcbridge.snapshot"

// request handles a request decoded from the stream.
func (r *snapshots) request(content []byte, lsn uint64) {
	var req snapshotRequest
	if err := json.Unmarshal(content, &req); err != nil {
		r.s.log.Warn("snapshot: ignoring an unreadable request", "lsn", formatLSN(lsn), "err", err)
		return
	}
	if req.Slot != r.s.cfg.Slot {
		return // for a bridge on another slot of this database
	}
	switch req.Op {
	case "snapshot":
		j := &snapshotJob{ID: req.ID, Where: req.Where, Requested: req.Time}
		for _, t := range req.Tables {
			j.Tables = append(j.Tables, &snapTableState{Name: t, State: tablePending})
		}
		if r.add(j) {
			r.s.log.Info("snapshot: requested", "id", req.ID, "tables", req.Tables, "where", req.Where, "lsn", formatLSN(lsn))
		}
	case "cancel":
		if r.cancel(req.ID) {
			r.s.log.Info("snapshot: cancel requested", "id", req.ID)
		} else {
			r.s.log.Warn("snapshot: cancel of an unknown or finished snapshot", "id", req.ID)
		}
	default:
		r.s.log.Warn("snapshot: ignoring a request", "op", req.Op, "lsn", formatLSN(lsn))
	}
}
