package postgres

import (
	"context"
	"fmt"
	"sync"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Built-in type OIDs (stable across PostgreSQL versions).
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt2Vector  = 22
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidOIDVector   = 30
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidNumeric     = 1700
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidJSONB       = 3802
	oidBox         = 603
)

var (
	textType = &typeInfo{kind: kindText, name: "text"}
	// builtinScalars are the scalar types whose JSON form is not their text.
	builtinScalars = map[uint32]*typeInfo{
		oidBool:        {kind: kindBool, name: "bool"},
		oidInt2:        {kind: kindNumber, name: "int2"},
		oidInt4:        {kind: kindNumber, name: "int4"},
		oidInt8:        {kind: kindNumber, name: "int8"},
		oidFloat4:      {kind: kindNumber, name: "float4"},
		oidFloat8:      {kind: kindNumber, name: "float8"},
		oidNumeric:     {kind: kindNumber, name: "numeric"},
		oidJSON:        {kind: kindJSON, name: "json"},
		oidJSONB:       {kind: kindJSON, name: "jsonb"},
		oidDate:        {kind: kindDate, name: "date"},
		oidTimestamp:   {kind: kindTimestamp, name: "timestamp"},
		oidTimestampTZ: {kind: kindTimestampTZ, name: "timestamptz"},
	}
	// builtinTexts are frequent built-in types written as their text form;
	// listing them saves a catalog query.
	builtinTexts = []uint32{
		17, 18, 19, 25, 26, 650, 774, 790, 829, 869, 1042, 1043, 1083, 1186, 1266, 2950, 142, 1560, 1562, 3614,
	}
	// builtinArrays maps built-in array OIDs to their element OIDs.
	builtinArrays = map[uint32]uint32{
		1000: oidBool, 1005: oidInt2, 1007: oidInt4, 1016: oidInt8, 1021: oidFloat4, 1022: oidFloat8,
		1231: oidNumeric, 199: oidJSON, 3807: oidJSONB, 1182: oidDate, 1115: oidTimestamp,
		1185: oidTimestampTZ, 1009: 25, 1015: 1043, 1014: 1042, 2951: 2950, 1001: 17, 1183: 1083,
		1270: 1266, 1187: 1186, 1041: 869, 651: 650, 1040: 829, 775: 774, 791: 790, 1028: 26,
		1002: 18, 1003: 19, 143: 142, 1561: 1560, 1563: 1562, 3643: 3614,
	}
)

// typeCache resolves type OIDs to conversion rules. Built-in types are
// known; others (domains, enums, arrays of them, extension types) are looked
// up once in pg_type and cached: a type's category never changes under an
// OID.
type typeCache struct {
	mu    sync.Mutex
	types map[uint32]*typeInfo
	names map[uint32]string // from pgoutput Type messages, for logs
}

func newTypeCache() *typeCache {
	c := &typeCache{types: make(map[uint32]*typeInfo), names: make(map[uint32]string)}
	for oid, ti := range builtinScalars {
		c.types[oid] = ti
	}
	for _, oid := range builtinTexts {
		c.types[oid] = textType
	}
	for arr, elem := range builtinArrays {
		c.types[arr] = &typeInfo{kind: kindArray, elem: c.types[elem], delim: ','}
	}
	c.types[oidInt2Vector] = &typeInfo{kind: kindVector, elem: c.types[oidInt2], name: "int2vector"}
	c.types[oidOIDVector] = &typeInfo{kind: kindVector, elem: c.types[oidOID], name: "oidvector"}
	return c
}

// known returns the cached info for oid.
func (c *typeCache) known(oid uint32) (*typeInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ti, ok := c.types[oid]
	return ti, ok
}

// noteName records a type's name from a pgoutput Type message.
func (c *typeCache) noteName(oid uint32, name string) {
	c.mu.Lock()
	c.names[oid] = name
	c.mu.Unlock()
}

// catalogQuerier runs the catalog queries of the type cache.
type catalogQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

var _ catalogQuerier = (*pgxpool.Pool)(nil)

type pgTypeRow struct {
	oid, basetype, elem uint32
	attrs               []pgAttr // composite types
	typtype, category   string
	delim               string // the element type's delimiter (array_out uses it)
	name                string
}

type pgAttr struct {
	name string
	typ  uint32
}

// forgetComposites drops cached composite types: their attributes change
// with ALTER TYPE or ALTER TABLE, and pgoutput announces no such change.
// Called on every Relation message, which is rare.
func (c *typeCache) forgetComposites() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for oid, ti := range c.types {
		if containsComposite(ti, 0) {
			delete(c.types, oid)
		}
	}
}

func containsComposite(ti *typeInfo, depth int) bool {
	if ti == nil || depth > 16 {
		return false
	}
	return ti.kind == kindComposite || containsComposite(ti.elem, depth+1)
}

// resolve returns the info of every oid, looking up unknown ones (and what
// they refer to) in pg_type. A type that no longer exists (dropped since
// the change was written) is written as text.
func (c *typeCache) resolve(ctx context.Context, q catalogQuerier, oids []uint32) (map[uint32]*typeInfo, error) {
	out := make(map[uint32]*typeInfo, len(oids))
	missing := c.collectMissing(oids, out)
	// Follow domains and element types level by level (domains over arrays
	// of domains are legal); a few rounds reach the bottom.
	rows := map[uint32]pgTypeRow{}
	for round := 0; len(missing) > 0 && round < 8; round++ {
		fetched, err := fetchTypes(ctx, q, missing)
		if err != nil {
			return nil, err
		}
		var next []uint32
		for _, oid := range missing {
			r, ok := fetched[oid]
			if !ok {
				continue
			}
			rows[oid] = r
			refs := []uint32{r.basetype, r.elem}
			for _, a := range r.attrs {
				refs = append(refs, a.typ)
			}
			for _, ref := range refs {
				if ref == 0 {
					continue
				}
				if _, done := rows[ref]; done {
					continue
				}
				if _, ok := c.known(ref); !ok {
					next = append(next, ref)
				}
			}
		}
		missing = next
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var build func(oid uint32, depth int) *typeInfo
	build = func(oid uint32, depth int) *typeInfo {
		if ti, ok := c.types[oid]; ok {
			return ti
		}
		r, ok := rows[oid]
		if !ok || depth > 16 {
			return textType
		}
		var ti *typeInfo
		switch {
		case r.typtype == "c":
			ti = &typeInfo{kind: kindComposite, name: r.name}
			c.types[oid] = ti // a composite may refer to itself through an array
			for _, a := range r.attrs {
				key := cdc.AppendJSONString(nil, a.name)
				ti.fields = append(ti.fields, compositeField{key: append(key, ':'), ti: build(a.typ, depth+1)})
			}
		case r.typtype == "d" && r.basetype != 0:
			base := build(r.basetype, depth+1)
			ti = base // a domain converts exactly like its base type
		case r.category == "A" && r.elem != 0:
			d := byte(',')
			if len(r.delim) == 1 {
				d = r.delim[0]
			}
			ti = &typeInfo{kind: kindArray, elem: build(r.elem, depth+1), delim: d, name: r.name}
		default:
			ti = &typeInfo{kind: kindText, name: r.name}
		}
		c.types[oid] = ti
		return ti
	}
	for _, oid := range oids {
		if _, ok := out[oid]; !ok {
			out[oid] = build(oid, 0)
		}
	}
	return out, nil
}

func (c *typeCache) collectMissing(oids []uint32, out map[uint32]*typeInfo) []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var missing []uint32
	for _, oid := range oids {
		if ti, ok := c.types[oid]; ok {
			out[oid] = ti
			continue
		}
		missing = append(missing, oid)
	}
	return missing
}

func fetchTypes(ctx context.Context, q catalogQuerier, oids []uint32) (map[uint32]pgTypeRow, error) {
	rows, err := q.Query(ctx, `SELECT t.oid::int8, t.typbasetype::int8, t.typelem::int8, t.typtype::text, t.typcategory::text,
			coalesce((SELECT e.typdelim::text FROM pg_catalog.pg_type e WHERE e.oid = t.typelem), ','),
			format_type(t.oid, NULL)
		FROM pg_catalog.pg_type t WHERE t.oid = ANY($1::oid[])`, oids)
	if err != nil {
		return nil, fmt.Errorf("looking up types %v in pg_type: %w", oids, err)
	}
	defer rows.Close()
	out := make(map[uint32]pgTypeRow, len(oids))
	for rows.Next() {
		var r pgTypeRow
		var oid, base, elem int64
		if err := rows.Scan(&oid, &base, &elem, &r.typtype, &r.category, &r.delim, &r.name); err != nil {
			return nil, fmt.Errorf("reading pg_type: %w", err)
		}
		r.oid, r.basetype, r.elem = uint32(oid), uint32(base), uint32(elem)
		out[r.oid] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading pg_type: %w", err)
	}
	var composites []uint32
	for oid, r := range out {
		if r.typtype == "c" {
			composites = append(composites, oid)
		}
	}
	if len(composites) == 0 {
		return out, nil
	}
	attrs, err := q.Query(ctx, `SELECT t.oid::int8, a.attname::text, a.atttypid::int8
		FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
		WHERE t.oid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY t.oid, a.attnum`, composites)
	if err != nil {
		return nil, fmt.Errorf("looking up composite types %v: %w", composites, err)
	}
	defer attrs.Close()
	for attrs.Next() {
		var oid, typ int64
		var name string
		if err := attrs.Scan(&oid, &name, &typ); err != nil {
			return nil, fmt.Errorf("reading pg_attribute: %w", err)
		}
		r := out[uint32(oid)]
		r.attrs = append(r.attrs, pgAttr{name: name, typ: uint32(typ)})
		out[uint32(oid)] = r
	}
	if err := attrs.Err(); err != nil {
		return nil, fmt.Errorf("reading pg_attribute: %w", err)
	}
	return out, nil
}
