package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

// model is a consumer as DESIGN.md describes one: it keeps the first
// occurrence of each id, drops a row's events whose sequence is at or
// below the last one it applied for that key, and applies the rest.
type model struct {
	seen    map[string]bool
	lastSeq map[string]string         // partition key -> last applied sequence
	rows    map[string]map[string]any // table -> key JSON -> row
	order   map[string][]string       // partition key -> sequences in delivery order (after dedupe)
	check   func(e *cdc.Event, prev map[string]any) error
	errs    []string
}

func newModel() *model {
	return &model{seen: map[string]bool{}, lastSeq: map[string]string{}, rows: map[string]map[string]any{}, order: map[string][]string{}}
}

func (m *model) apply(events []*cdc.Event) {
	for _, e := range events {
		if m.seen[e.ID] {
			continue
		}
		m.seen[e.ID] = true
		m.order[e.PartitionKey] = append(m.order[e.PartitionKey], e.Sequence)
		if e.Op == cdc.OpMessage {
			continue
		}
		if e.Op == cdc.OpTruncate {
			delete(m.rows, e.Subject)
			continue
		}
		if last, ok := m.lastSeq[e.PartitionKey]; ok && e.Sequence <= last {
			continue
		}
		m.lastSeq[e.PartitionKey] = e.Sequence
		tbl := m.rows[e.Subject]
		if tbl == nil {
			tbl = map[string]any{}
			m.rows[e.Subject] = tbl
		}
		key := canonical(e.Key)
		prev, _ := tbl[key].(map[string]any)
		if m.check != nil {
			if err := m.check(e, prev); err != nil {
				m.errs = append(m.errs, fmt.Sprintf("%s %s %s: %v", e.ID, e.Op, e.Key, err))
			}
		}
		switch e.Op {
		case cdc.OpDelete:
			delete(tbl, key)
		default:
			var row map[string]any
			dec := json.NewDecoder(bytes.NewReader(e.After))
			dec.UseNumber()
			if err := dec.Decode(&row); err != nil {
				m.errs = append(m.errs, fmt.Sprintf("%s: after %s: %v", e.ID, e.After, err))
			}
			// Unchanged TOAST values are absent from after: the consumer
			// keeps the ones it has.
			for _, c := range e.UnchangedToast {
				if v, ok := prev[c]; ok {
					row[c] = v
				}
			}
			tbl[key] = row
		}
	}
}

// orderErrors lists partition keys whose events arrived out of sequence
// order (after dropping repeated ids).
func (m *model) orderErrors() []string {
	var out []string
	for pk, seqs := range m.order {
		if !sort.StringsAreSorted(seqs) {
			out = append(out, fmt.Sprintf("%s: %v", pk, seqs))
		}
	}
	return out
}

func canonical(raw json.RawMessage) string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return string(raw)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// tableState reads a table as the model holds it: key JSON -> to_jsonb(row).
func tableState(t *testing.T, conn *pgx.Conn, table string, keyCols string) map[string]any {
	t.Helper()
	rows, err := conn.Query(context.Background(), fmt.Sprintf("SELECT jsonb_build_object(%s)::text, to_jsonb(t)::text FROM %s t", keyCols, table))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]any{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		var row map[string]any
		dec := json.NewDecoder(bytes.NewReader([]byte(v)))
		dec.UseNumber()
		if err := dec.Decode(&row); err != nil {
			t.Fatal(err)
		}
		out[canonical([]byte(k))] = row
	}
	return out
}

// matches reports whether the model's table equals the database's.
func (m *model) matches(t *testing.T, conn *pgx.Conn, subject, table, keyCols string) (bool, string) {
	t.Helper()
	want := tableState(t, conn, table, keyCols)
	got := m.rows[subject]
	if got == nil {
		got = map[string]any{}
	}
	d := cmp.Diff(want, got)
	return d == "", d
}
