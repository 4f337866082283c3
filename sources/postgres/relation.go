package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// column is one column of a published table as the bridge converts it.
type column struct {
	name    string
	key     []byte // JSON-encoded name followed by ':'
	typeOID uint32
	ti      *typeInfo
}

// relation is the bridge's view of one table: pgoutput's Relation message
// (or, for the snapshot, the catalog) plus the key that orders its rows.
type relation struct {
	id        uint32
	schema    string
	table     string
	qualified string // schema.table: the event subject and partition key prefix
	identity  byte   // replica identity: 'd' default, 'n' nothing, 'f' full, 'i' index
	cols      []column
	// keyIdx are the columns that identify a row, in key order; empty when
	// the table has none (its events are ordered per table).
	keyIdx   []int
	tableKey string // cdc.TablePartitionKey(qualified)
}

// indexKeys are a table's primary key and replica identity index columns,
// in index order, from the catalog.
type indexKeys struct {
	pk, ri []string
}

func lookupIndexKeys(ctx context.Context, q catalogQuerier, relID uint32) (indexKeys, error) {
	rows, err := q.Query(ctx, `SELECT i.indisprimary, i.indisreplident,
			array_agg(a.attname::text ORDER BY k.n)
		FROM pg_catalog.pg_index i
		CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
		JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1::oid AND (i.indisprimary OR i.indisreplident)
		GROUP BY i.indexrelid, i.indisprimary, i.indisreplident`, int64(relID))
	if err != nil {
		return indexKeys{}, fmt.Errorf("looking up the keys of relation %d: %w", relID, err)
	}
	defer rows.Close()
	var k indexKeys
	for rows.Next() {
		var primary, replident bool
		var names []string
		if err := rows.Scan(&primary, &replident, &names); err != nil {
			return indexKeys{}, fmt.Errorf("looking up the keys of relation %d: %w", relID, err)
		}
		if primary {
			k.pk = names
		}
		if replident {
			k.ri = names
		}
	}
	if err := rows.Err(); err != nil {
		return indexKeys{}, fmt.Errorf("looking up the keys of relation %d: %w", relID, err)
	}
	return k, nil
}

// chooseKey picks the columns that identify a row. The replica identity is
// authoritative when it names columns (DEFAULT with a primary key, USING
// INDEX): old-key tuples of updates and deletes carry exactly those, so
// every event of a row can be keyed. flagged holds the identity columns of
// a Relation message (nil for the snapshot, which asks the catalog). With
// FULL or NOTHING the primary key, when there is one, identifies rows. The
// key's order is the index's; when the catalog no longer matches the
// message (the table changed since), the message's column order.
func chooseKey(identity byte, names []string, flagged []bool, k indexKeys) []int {
	idx := func(want []string) []int {
		out := make([]int, 0, len(want))
		for _, w := range want {
			i := slices.Index(names, w)
			if i < 0 {
				return nil
			}
			out = append(out, i)
		}
		return out
	}
	var catalog []string
	switch identity {
	case 'd':
		catalog = k.pk
	case 'i':
		catalog = k.ri
	default: // 'f', 'n'
		if len(k.pk) == 0 {
			return nil
		}
		return idx(k.pk)
	}
	if flagged == nil {
		if len(catalog) == 0 {
			return nil
		}
		return idx(catalog)
	}
	var fromMsg []int
	for i, f := range flagged {
		if f {
			fromMsg = append(fromMsg, i)
		}
	}
	if len(fromMsg) == 0 {
		return nil
	}
	if c := idx(catalog); len(c) == len(fromMsg) {
		sorted := slices.Clone(c)
		slices.Sort(sorted)
		if slices.Equal(sorted, fromMsg) {
			return c
		}
	}
	return fromMsg
}

func newRelation(id uint32, schema, table string, identity byte) *relation {
	q := schema + "." + table
	return &relation{id: id, schema: schema, table: table, qualified: q, identity: identity, tableKey: cdc.TablePartitionKey(q)}
}

func (r *relation) addColumn(name string, typeOID uint32, ti *typeInfo) {
	key := cdc.AppendJSONString(nil, name)
	r.cols = append(r.cols, column{name: name, key: append(key, ':'), typeOID: typeOID, ti: ti})
}

func (r *relation) columnNames() []string {
	names := make([]string, len(r.cols))
	for i, c := range r.cols {
		names[i] = c.name
	}
	return names
}

// appendRow appends the JSON object of t. Unchanged TOAST columns are
// taken from fill (a complete old row) when it has them, else left out and
// returned in unchanged.
func (r *relation) appendRow(b []byte, t *tuple, fill *tuple) ([]byte, []string, error) {
	if len(t.cols) != len(r.cols) {
		return b, nil, fmt.Errorf("%s: row has %d columns, relation has %d", r.qualified, len(t.cols), len(r.cols))
	}
	var unchanged []string
	b = append(b, '{')
	first := true
	for i := range r.cols {
		c := t.cols[i]
		if c.kind == colUnchanged {
			if fill != nil && len(fill.cols) == len(r.cols) && fill.cols[i].kind != colUnchanged {
				c = fill.cols[i]
			} else {
				unchanged = append(unchanged, r.cols[i].name)
				continue
			}
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, r.cols[i].key...)
		b = r.appendCol(b, i, c)
	}
	return append(b, '}'), unchanged, nil
}

func (r *relation) appendCol(b []byte, i int, c tupleCol) []byte {
	switch c.kind {
	case colText:
		return appendValue(b, r.cols[i].ti, c.data)
	case colBinary: // not requested; written as text should a server send it
		return appendString(b, c.data)
	default:
		return append(b, "null"...)
	}
}

// complete reports whether t carries every column's value.
func complete(t *tuple) bool {
	for _, c := range t.cols {
		if c.kind == colUnchanged {
			return false
		}
	}
	return true
}

// appendKey appends the key object of t ({"id":42}) and returns it with the
// canonical key array ([42]) for the partition key. pick chooses, per key
// column, the tuple holding its value (the new row, or the old key when the
// new row left it out as unchanged TOAST).
func (r *relation) appendKey(b []byte, t, alt *tuple) (out []byte, keyArray []byte) {
	if len(r.keyIdx) == 0 {
		return b, nil
	}
	b = append(b, '{')
	var arr []byte
	for n, i := range r.keyIdx {
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, r.cols[i].key...)
		c := t.cols[i]
		if c.kind == colUnchanged && alt != nil && i < len(alt.cols) {
			c = alt.cols[i]
		}
		v := len(b)
		b = r.appendCol(b, i, c)
		if arr == nil {
			arr = make([]byte, 0, 2+len(r.keyIdx)*(len(b)-v+1))
			arr = append(arr, '[')
		} else {
			arr = append(arr, ',')
		}
		arr = append(arr, b[v:]...)
	}
	b = append(b, '}')
	arr = append(arr, ']')
	return b, arr
}

// sameKey reports whether the key columns of a and b hold the same values
// (an unchanged TOAST value in b counts as the same).
func (r *relation) sameKey(a, b *tuple) bool {
	for _, i := range r.keyIdx {
		if i >= len(a.cols) || i >= len(b.cols) {
			return false
		}
		x, y := a.cols[i], b.cols[i]
		if y.kind == colUnchanged || x.kind == colUnchanged {
			continue
		}
		if x.kind != y.kind || string(x.data) != string(y.data) {
			return false
		}
	}
	return true
}
