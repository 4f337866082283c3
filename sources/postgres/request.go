package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SnapshotRequest is a snapshot asked for with RequestSnapshot.
type SnapshotRequest struct {
	ID     string   `json:"id"`
	LSN    string   `json:"lsn"` // where the request is in the WAL
	Tables []string `json:"tables"`
	Where  string   `json:"where,omitempty"`
}

// RequestSnapshot asks the bridge streaming from cfg's slot to read
// tables again (the rows matching where, when set), while it streams.
// The request is a transactional logical decoding message, so it reaches
// whichever instance streams from the slot when its stream gets there,
// and it waits in the WAL while none does. Every table must exist, be in
// the bridge's publication and have a key, and where must be a valid
// condition for each; otherwise nothing is sent and the error says why.
func RequestSnapshot(ctx context.Context, cfg Config, tables []string, where string) (SnapshotRequest, error) {
	cfg.setDefaults()
	if len(tables) == 0 {
		return SnapshotRequest{}, errors.New("name at least one table")
	}
	conn, err := connectNormal(ctx, cfg.URL)
	if err != nil {
		return SnapshotRequest{}, err
	}
	defer conn.Close(context.Background())
	pubs := []string{cfg.Publication, cfg.Publication + insertOnlySuffix}
	req := SnapshotRequest{ID: newSnapshotID(), Where: strings.TrimSpace(where)}
	for _, name := range tables {
		q, err := checkSnapshotTable(ctx, conn, name, pubs, req.Where)
		if err != nil {
			return SnapshotRequest{}, err
		}
		if !slices.Contains(req.Tables, q) {
			req.Tables = append(req.Tables, q)
		}
	}
	msg, _ := json.Marshal(snapshotRequest{Op: "snapshot", Slot: cfg.Slot, ID: req.ID, Tables: req.Tables, Where: req.Where, Time: nowText()})
	req.LSN, err = emitRequest(ctx, conn, msg)
	return req, err
}

// CancelSnapshot asks the bridge to stop snapshot id after the chunk in
// flight. It returns where the request is in the WAL.
func CancelSnapshot(ctx context.Context, cfg Config, id string) (string, error) {
	cfg.setDefaults()
	conn, err := connectNormal(ctx, cfg.URL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	msg, _ := json.Marshal(snapshotRequest{Op: "cancel", Slot: cfg.Slot, ID: id, Time: nowText()})
	return emitRequest(ctx, conn, msg)
}

func emitRequest(ctx context.Context, conn *pgx.Conn, msg []byte) (string, error) {
	var lsn string
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2::text)::text", snapshotPrefix, string(msg)).Scan(&lsn); err != nil {
		return "", fmt.Errorf("sending the request (pg_logical_emit_message): %w", err)
	}
	return lsn, nil
}

// newSnapshotID names a requested snapshot: the time and a random part.
func newSnapshotID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "s" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// checkSnapshotTable resolves name as PostgreSQL would (quoted parts,
// search_path) and checks that a snapshot of it can run: it is published,
// has a key, and where is valid for it. It returns schema.table.
func checkSnapshotTable(ctx context.Context, conn *pgx.Conn, name string, pubs []string, where string) (string, error) {
	var schema, table, relkind string
	var hasKey bool
	err := conn.QueryRow(ctx, `SELECT n.nspname::text, c.relname::text, c.relkind::text,
			EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident))
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = pg_catalog.to_regclass($1)`, name).Scan(&schema, &table, &relkind, &hasKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("table %s does not exist", name)
	}
	if err != nil {
		return "", fmt.Errorf("table %s: %w", name, err)
	}
	qualified := schema + "." + table
	if relkind != "r" && relkind != "p" {
		return "", fmt.Errorf("%s is not a table", qualified)
	}
	var published bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables
		WHERE pubname = ANY($1) AND schemaname = $2 AND tablename = $3)`, pubs, schema, table).Scan(&published); err != nil {
		return "", fmt.Errorf("table %s: %w", qualified, err)
	}
	if !published {
		return "", fmt.Errorf("table %s is not in publication %s: its changes are not streamed, so its rows would not stay current; "+
			"add it to the publication first (CDCBRIDGE_POSTGRES_TABLES, or ALTER PUBLICATION)", qualified, pubs[0])
	}
	if !hasKey {
		return "", fmt.Errorf("table %s has no primary key or replica identity index: a snapshot reads rows in key order and tells them apart from the stream's changes by key; "+
			"give it a primary key (or REPLICA IDENTITY USING INDEX on a unique index)", qualified)
	}
	if where != "" {
		sql := "EXPLAIN SELECT 1 FROM " + quoteIdent(schema) + "." + quoteIdent(table) + " WHERE (" + where + ")"
		// The extended protocol runs one statement: the condition cannot
		// end this one and start another.
		if _, err := conn.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Close(); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				return "", fmt.Errorf("--where is not a valid condition for %s: %s", qualified, pgErr.Message)
			}
			return "", fmt.Errorf("--where for %s: %w", qualified, err)
		}
	}
	return qualified, nil
}

// Snapshots reads the snapshots of cfg's slot, and their progress, from
// the checkpoint store (as the active bridge last saved them, at most a
// second ago while it runs).
func Snapshots(ctx context.Context, cfg Config, store checkpoint.Store) ([]SnapshotInfo, error) {
	cfg.setDefaults()
	conn, err := connectReplication(ctx, cfg.URL)
	if err != nil {
		return nil, err
	}
	ident, err := identify(ctx, conn)
	_ = conn.Close(context.Background())
	if err != nil {
		return nil, err
	}
	st, err := (&stateStore{store: store, key: stateKey(ident.sysID, ident.database, cfg.Slot)}).load(ctx)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return []SnapshotInfo{}, nil
	}
	return jobInfos(st.Snapshots, nil), nil
}
