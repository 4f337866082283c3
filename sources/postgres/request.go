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
	if err := checkSlot(ctx, conn, cfg.Slot); err != nil {
		return SnapshotRequest{}, err
	}
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
	if err := checkSlot(ctx, conn, cfg.Slot); err != nil {
		return "", err
	}
	msg, _ := json.Marshal(snapshotRequest{Op: "cancel", Slot: cfg.Slot, ID: id, Time: nowText()})
	return emitRequest(ctx, conn, msg)
}

// checkSlot makes sure that a request will be decoded: a message before
// the slot's consistent point never is, so the slot must exist and be
// created already.
func checkSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	var confirmed *string
	err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots
		WHERE slot_name = $1 AND database = current_database()`, slot).Scan(&confirmed)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("replication slot %s does not exist in this database: start the bridge first (it creates the slot); nothing was sent", slot)
	case err != nil:
		return fmt.Errorf("looking up replication slot %s: %w", slot, err)
	case confirmed == nil:
		return fmt.Errorf("replication slot %s is still being created: try again once the bridge streams; nothing was sent", slot)
	}
	return nil
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
		if err := checkWhere(where); err != nil {
			return "", err
		}
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

// checkWhere makes sure a condition stays one expression inside the
// parentheses it is put in: a condition such as "a) OR (b" is valid SQL
// there but would take the chunk's key bound out of the query. Outside
// string literals, quoted names and comments, its parentheses must
// balance and it must not end the statement.
func checkWhere(where string) error {
	depth := 0
	for i := 0; i < len(where); i++ {
		c := where[i]
		switch {
		case c == '\'' || c == '"':
			// A literal (E'' ones with backslash escapes) or a quoted
			// name; a doubled quote is the quote itself.
			escapes := c == '\'' && i > 0 && (where[i-1] == 'E' || where[i-1] == 'e')
			j := i + 1
			for ; j < len(where); j++ {
				if escapes && where[j] == '\\' {
					j++
					continue
				}
				if where[j] == c {
					if j+1 < len(where) && where[j+1] == c {
						j++
						continue
					}
					break
				}
			}
			if j >= len(where) {
				return fmt.Errorf("--where: unterminated %c", c)
			}
			i = j
		case c == '$':
			// A dollar-quoted string: $tag$ ... $tag$ (a parameter such
			// as $1 is refused by PostgreSQL anyway).
			end := strings.IndexByte(where[i+1:], '$')
			if end < 0 {
				continue
			}
			tag := where[i : i+end+2]
			if strings.ContainsFunc(tag[1:len(tag)-1], func(r rune) bool {
				return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r > 127)
			}) {
				continue
			}
			close := strings.Index(where[i+len(tag):], tag)
			if close < 0 {
				return fmt.Errorf("--where: unterminated %s string", tag)
			}
			i += len(tag) + close + len(tag) - 1
		case c == '-' && i+1 < len(where) && where[i+1] == '-':
			return errors.New("--where: a -- comment would hide the rest of the query; use /* */")
		case c == '/' && i+1 < len(where) && where[i+1] == '*':
			end := strings.Index(where[i+2:], "*/")
			if end < 0 {
				return errors.New("--where: unterminated /* comment")
			}
			i += 2 + end + 1
		case c == ';':
			return errors.New("--where: a condition cannot contain ';'")
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth < 0 {
				return errors.New("--where: a ')' without its '(': the condition must be one expression")
			}
		}
	}
	if depth != 0 {
		return errors.New("--where: a '(' without its ')'")
	}
	return nil
}
