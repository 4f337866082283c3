package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlanBacklog(t *testing.T) {
	for _, total := range []int{1_000_000, 300_000, 100_000, 50_000} {
		p := planBacklog(total)
		if got := p.BigTx + p.Batches*p.BatchRows + p.Singles; got != total || p.Total != total {
			t.Errorf("planBacklog(%d) adds up to %d (Total %d): %+v", total, got, p.Total, p)
		}
		if p.HotKeys*p.HotChanges > p.Singles {
			t.Errorf("planBacklog(%d): more hot changes than single-row transactions: %+v", total, p)
		}
	}
	p := planBacklog(1_000_000)
	want := backlogPlan{Total: 1_000_000, BigTx: 100_000, Batches: 8_000, BatchRows: 100, Singles: 100_000,
		HotKeys: 10, HotChanges: 1_000, DistinctKeys: 100_000, RowBytesAbout: 200}
	if p != want {
		t.Errorf("planBacklog(1000000) = %+v, want %+v", p, want)
	}
}

func TestFigure(t *testing.T) {
	f := newFigure("x", []float64{3, 1, 2, 10})
	if f.Min != 1 || f.Max != 10 || f.Median != 2.5 || f.Samples[0] != 3 {
		t.Errorf("newFigure = %+v", f)
	}
	if f := newFigure("x", []float64{5, 1, 3}); f.Median != 3 {
		t.Errorf("odd median = %v", f.Median)
	}
}

func TestUpdateSQL(t *testing.T) {
	if v := updateSQL([]int64{7}); v != "UPDATE bench_items SET amount = amount + 1, status = 'paid', updated_at = now() WHERE id = 7" {
		t.Errorf("updateSQL single = %q", v)
	}
	if v := updateSQL([]int64{1, 2}); !strings.HasSuffix(v, " WHERE id IN (1,2)") {
		t.Errorf("updateSQL batch = %q", v)
	}
}

func TestUpdateReadme(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(path, []byte("intro\n"+readmeBegin+"\nold table\n"+readmeEnd+"\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateReadme(path, "new table\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if want := "intro\n" + readmeBegin + "\nnew table\n\n" + readmeEnd + "\nafter\n"; string(b) != want {
		t.Fatalf("README:\n%s\nwant:\n%s", b, want)
	}
	if err := os.WriteFile(path, []byte("no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateReadme(path, "x"); err == nil {
		t.Fatal("a README without markers was accepted")
	}
}
