package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// snapshotPageBytes is the target size of one FETCH: pages shrink below
// SnapshotBatchRows rows when rows are large, so a page's memory stays
// near this whatever the table.
const snapshotPageBytes = 8 << 20

// snapshotProgress is shown in Status while a snapshot runs.
type snapshotProgress struct {
	ConsistentPoint string    `json:"consistent_point"`
	Tables          int       `json:"tables"`
	TablesDone      int       `json:"tables_done"`
	Rows            int64     `json:"rows"`
	Unacknowledged  int64     `json:"unacknowledged"`
	Current         string    `json:"current_table,omitempty"`
	Started         time.Time `json:"started"`
}

// snapTable is one published table to read.
type snapTable struct {
	oid      uint32
	schema   string
	name     string
	relkind  string
	identity byte
	columns  []string // published columns (nil: all)
	filter   string   // row filter ("" : none)
}

// readSnapshot reads every published table in the slot's exported
// snapshot, emits a read event per row, and returns once every one of
// them is acknowledged. The replication connection that exported the
// snapshot stays idle meanwhile, which keeps the snapshot valid.
func (s *Source) readSnapshot(ctx context.Context, pool *pgxpool.Pool, snapName string, cp uint64, source string, pubs []string, emit cdc.Emit) error {
	conn, err := connectNormal(ctx, s.cfg.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapName)); err != nil {
		return fmt.Errorf("snapshot: importing %s: %w", snapName, err)
	}
	tables, err := publishedTables(ctx, conn, pubs)
	if err != nil {
		return err
	}
	var serverVersion int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&serverVersion); err != nil {
		return fmt.Errorf("snapshot: reading the server version: %w", err)
	}
	prog := &snapshotProgress{ConsistentPoint: formatLSN(cp), Tables: len(tables), Started: time.Now()}
	s.mu.Lock()
	s.snap = prog
	s.mu.Unlock()
	s.m.snapRunning.Set(1)
	s.m.snapTablesTotal.Set(float64(len(tables)))
	s.m.snapTablesDone.Set(0)
	defer s.m.snapRunning.Set(0)
	s.log.Info("snapshot: reading published tables", "tables", len(tables), "consistent_point", prog.ConsistentPoint)

	r := &snapReader{
		s: s, conn: conn, pool: pool, cp: cp, source: source, emit: emit, prog: prog, genCols: serverVersion >= 180000,
		seq: cdc.SnapshotSequence(cp), cpStr: formatLSN(cp), acked: make(chan struct{}, 1), lastLog: time.Now(),
	}
	r.onAck = func() {
		if r.pending.Add(-1) == 0 {
			signal(r.acked)
		}
	}
	for _, t := range tables {
		if err := r.table(ctx, t); err != nil {
			return err
		}
		s.mu.Lock()
		prog.TablesDone++
		prog.Current = ""
		s.mu.Unlock()
		s.m.snapTablesDone.Inc()
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	// The snapshot counts as complete only once every row is accepted.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for r.pending.Load() > 0 {
		s.heartbeat()
		s.mu.Lock()
		prog.Unacknowledged = r.pending.Load()
		s.mu.Unlock()
		select {
		case <-r.acked:
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	prog.Unacknowledged = 0
	s.mu.Unlock()
	s.log.Info("snapshot: complete", "tables", len(tables), "rows", prog.Rows, "took", time.Since(prog.Started).Round(time.Millisecond))
	return nil
}

type snapReader struct {
	s       *Source
	conn    *pgx.Conn
	pool    *pgxpool.Pool
	cp      uint64
	cpStr   string
	seq     string
	source  string
	emit    cdc.Emit
	prog    *snapshotProgress
	pending atomic.Int64
	acked   chan struct{}
	onAck   func()
	lastLog time.Time
	// genCols: pgoutput may publish stored generated columns (18+).
	genCols bool
}

// table reads one table through a cursor, a page at a time.
func (r *snapReader) table(ctx context.Context, t snapTable) error {
	s := r.s
	qualified := t.schema + "." + t.name
	s.mu.Lock()
	r.prog.Current = qualified
	s.mu.Unlock()
	rel, err := r.relation(ctx, t)
	if err != nil {
		return err
	}
	var sel strings.Builder
	sel.WriteString("DECLARE cdcbridge_snapshot NO SCROLL CURSOR FOR SELECT ")
	noKey := len(rel.keyIdx) == 0
	if noKey {
		// Rows without a key are told apart by their place in the
		// snapshot, which is stable for as long as it is.
		sel.WriteString("ctid::text")
	}
	for i, c := range rel.cols {
		if i > 0 || noKey {
			sel.WriteString(", ")
		}
		sel.WriteString(quoteIdent(c.name))
	}
	sel.WriteString(" FROM ")
	if t.relkind != "p" {
		sel.WriteString("ONLY ") // inheritance children are published (and read) on their own
	}
	sel.WriteString(quoteIdent(t.schema) + "." + quoteIdent(t.name))
	if t.filter != "" {
		sel.WriteString(" WHERE " + t.filter)
	}
	if len(rel.cols) == 0 && !noKey {
		return nil
	}
	if _, err := r.conn.Exec(ctx, sel.String()); err != nil {
		return fmt.Errorf("snapshot of %s: %w", qualified, err)
	}
	page := r.s.cfg.SnapshotBatchRows
	var rows int64
	var tup tuple
	for {
		s.heartbeat()
		res, err := r.conn.PgConn().Exec(ctx, fmt.Sprintf("FETCH FORWARD %d FROM cdcbridge_snapshot", page)).ReadAll()
		if err != nil {
			return fmt.Errorf("snapshot of %s: fetching: %w", qualified, err)
		}
		if len(res) != 1 {
			return fmt.Errorf("snapshot of %s: fetch returned %d results", qualified, len(res))
		}
		n := len(res[0].Rows)
		pageBytes := 0
		for _, row := range res[0].Rows {
			off := 0
			var ctid []byte
			if noKey {
				ctid, off = row[0], 1
			}
			tup.cols = tup.cols[:0]
			for _, v := range row[off:] {
				pageBytes += len(v)
				if v == nil {
					tup.cols = append(tup.cols, tupleCol{kind: colNull})
				} else {
					tup.cols = append(tup.cols, tupleCol{kind: colText, data: v})
				}
			}
			e := &cdc.Event{
				Source: r.source, Subject: rel.qualified, Op: cdc.OpRead, Sequence: r.seq,
				Info: cdc.SourceInfo{Snapshot: true, ConsistentPoint: r.cpStr, Schema: rel.schema, Table: rel.table},
			}
			if err := buildImages(e, rel, images{key: &tup, after: &tup}); err != nil {
				return fmt.Errorf("snapshot of %s: %w", qualified, err)
			}
			hashInput := e.PartitionKey
			if noKey {
				hashInput += "#ctid:" + string(ctid)
			}
			e.ID = cdc.SnapshotID(r.cp, rel.qualified, hashInput)
			e.OnAck = r.onAck
			r.pending.Add(1)
			s.m.received[cdc.OpRead].Inc()
			if err := sinkError(ctx, r.emit(ctx, e)); err != nil {
				return fmt.Errorf("snapshot of %s: %w", qualified, err)
			}
		}
		rows += int64(n)
		s.m.snapRows.Add(float64(n))
		s.mu.Lock()
		r.prog.Rows += int64(n)
		s.mu.Unlock()
		if time.Since(r.lastLog) > 10*time.Second {
			r.lastLog = time.Now()
			s.log.Info("snapshot: progress", "table", qualified, "table_rows", rows, "rows", r.prog.Rows,
				"tables_done", r.prog.TablesDone, "tables", r.prog.Tables)
		}
		if n < page {
			break
		}
		if pageBytes > 0 {
			page = min(max(snapshotPageBytes/(pageBytes/n+1), 1), r.s.cfg.SnapshotBatchRows)
		}
	}
	if _, err := r.conn.Exec(ctx, "CLOSE cdcbridge_snapshot"); err != nil {
		return fmt.Errorf("snapshot of %s: %w", qualified, err)
	}
	s.log.Info("snapshot: table done", "table", qualified, "rows", rows)
	return nil
}

// relation builds the table's conversion rules from the catalog, as the
// stream's Relation message would.
func (r *snapReader) relation(ctx context.Context, t snapTable) (*relation, error) {
	rows, err := r.conn.Query(ctx, `SELECT attname::text, atttypid::int8, attgenerated::text FROM pg_catalog.pg_attribute
		WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped
		ORDER BY attnum`, int64(t.oid))
	if err != nil {
		return nil, fmt.Errorf("snapshot: columns of %s.%s: %w", t.schema, t.name, err)
	}
	var names []string
	var oids []uint32
	for rows.Next() {
		var name, generated string
		var oid int64
		if err := rows.Scan(&name, &oid, &generated); err != nil {
			rows.Close()
			return nil, err
		}
		if t.columns != nil && !slices.Contains(t.columns, name) {
			continue // not in the publication's column list
		}
		// A snapshot row has the columns a streamed one has. pgoutput
		// sends a stored generated column from 18 on, when the
		// publication names it or has publish_generated_columns = stored,
		// and 18's pg_publication_tables then lists it; before 18 it never
		// sends one, though 15 lists them all. Virtual generated columns
		// (18) are computed on read and never published.
		switch generated {
		case "":
		case "s":
			if !r.genCols || t.columns == nil {
				continue
			}
		default:
			continue
		}
		names = append(names, name)
		oids = append(oids, uint32(oid))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("snapshot: columns of %s.%s: %w", t.schema, t.name, err)
	}
	infos, err := r.s.types.resolve(ctx, r.pool, oids)
	if err != nil {
		return nil, err
	}
	rel := newRelation(t.oid, t.schema, t.name, t.identity)
	for i, n := range names {
		rel.addColumn(n, oids[i], infos[oids[i]])
	}
	keys, err := lookupIndexKeys(ctx, r.pool, t.oid)
	if err != nil {
		return nil, err
	}
	rel.keyIdx = chooseKey(t.identity, names, nil, keys)
	return rel, nil
}

// publishedTables lists the tables of pubs with their column lists and
// row filters (PostgreSQL 15+), merged over publications: a row published
// by any of them is read.
func publishedTables(ctx context.Context, conn *pgx.Conn, pubs []string) ([]snapTable, error) {
	rows, err := conn.Query(ctx, `SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text, c.relreplident::text, to_jsonb(pt)
		FROM pg_catalog.pg_publication_tables pt
		JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = ANY($1)
		ORDER BY n.nspname, c.relname`, pubs)
	if err != nil {
		return nil, fmt.Errorf("snapshot: listing published tables: %w", err)
	}
	defer rows.Close()
	var out []snapTable
	byOID := map[uint32]int{}
	for rows.Next() {
		var oid int64
		var t snapTable
		var ident string
		var raw []byte
		if err := rows.Scan(&oid, &t.schema, &t.name, &t.relkind, &ident, &raw); err != nil {
			return nil, fmt.Errorf("snapshot: listing published tables: %w", err)
		}
		t.oid = uint32(oid)
		if ident != "" {
			t.identity = ident[0]
		}
		var extra struct {
			Attnames  *[]string `json:"attnames"`
			RowFilter *string   `json:"rowfilter"`
		}
		if err := json.Unmarshal(raw, &extra); err != nil {
			return nil, fmt.Errorf("snapshot: listing published tables: %w", err)
		}
		if extra.Attnames != nil {
			t.columns = *extra.Attnames
		}
		if extra.RowFilter != nil {
			t.filter = "(" + *extra.RowFilter + ")"
		}
		if i, ok := byOID[t.oid]; ok {
			prev := &out[i]
			if prev.columns != nil && t.columns != nil {
				for _, c := range t.columns {
					if !slices.Contains(prev.columns, c) {
						prev.columns = append(prev.columns, c)
					}
				}
			} else {
				prev.columns = nil
			}
			if prev.filter != "" && t.filter != "" {
				prev.filter += " OR " + t.filter
			} else {
				prev.filter = ""
			}
			continue
		}
		byOID[t.oid] = len(out)
		out = append(out, t)
	}
	return out, rows.Err()
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
