package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

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

// snapshotRelation builds the table's conversion rules from the catalog,
// as the stream's Relation message would. genCols: pgoutput may publish
// stored generated columns (18+).
func snapshotRelation(ctx context.Context, conn *pgx.Conn, pool *pgxpool.Pool, types *typeCache, t snapTable, genCols bool) (*relation, error) {
	rows, err := conn.Query(ctx, `SELECT attname::text, atttypid::int8, attgenerated::text FROM pg_catalog.pg_attribute
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
			if !genCols || t.columns == nil {
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
	infos, err := types.resolve(ctx, pool, oids)
	if err != nil {
		return nil, err
	}
	rel := newRelation(t.oid, t.schema, t.name, t.identity)
	for i, n := range names {
		rel.addColumn(n, oids[i], infos[oids[i]])
	}
	keys, err := lookupIndexKeys(ctx, pool, t.oid)
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
