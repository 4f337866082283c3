package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// budget records what the snapshot chunks reserve of the sink's budget.
type budget struct {
	size int64
	mu   sync.Mutex
	held int64
	peak int64
	n    int
}

func (b *budget) Reserve(_ context.Context, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held += n
	b.peak = max(b.peak, b.held)
	b.n++
	return nil
}

func (b *budget) Unreserve(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= n
	if b.held < 0 {
		panic(fmt.Sprintf("budget: %d bytes returned that were not reserved", -b.held))
	}
}

func (b *budget) InFlightBudget() int64 { return b.size }

func (b *budget) state() (held, peak int64, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, b.peak, b.n
}

// cdcbridge snapshot's requests: refused with the reason before the slot
// exists and for bad input, read by the running source while it streams
// (only the rows matching --where), cancelled after the chunk in flight,
// and listed from the checkpoint store. The chunks' memory is reserved in
// the sink's budget, at most two chunks' worth at a time, and all of it is
// returned.
func TestSnapshotRequest(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	counterTable(t, conn, "r", 3000)
	ctx := t.Context()
	cfg := Config{URL: url, Slot: slotFor(url), Snapshot: SnapshotNever}

	if _, err := RequestSnapshot(ctx, cfg, []string{"public.r"}, ""); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("request before the slot exists: %v, want the missing slot", err)
	}

	b := &budget{size: 1 << 20} // chunks of at most 256 KiB
	cfg.SnapshotChunkRows = 500
	cfg.Budget = b
	store := newMemStore()
	sk := newSink(t)
	r := startSource(t, cfg, store, sk.emit)
	r.streaming(t)

	for _, bad := range []struct {
		tables []string
		where  string
		want   string
	}{
		{[]string{"public.r"}, "nope = 1", `column "nope" does not exist`},
		{[]string{"public.r"}, "id =", "syntax error"},
		{[]string{"public.r"}, "true) OR (true", "one expression"},
		{[]string{"public.missing"}, "", "does not exist"},
	} {
		if _, err := RequestSnapshot(ctx, cfg, bad.tables, bad.where); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("request %v where %q: %v, want %q", bad.tables, bad.where, err, bad.want)
		}
	}

	req, err := RequestSnapshot(ctx, cfg, []string{"public.r"}, "id % 3 = 0")
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, r, req.ID, func(j SnapshotInfo) bool { return j.Finished != "" })
	reads := map[int]int{}
	for _, e := range sk.snapshot() {
		if e.Op != cdc.OpRead {
			continue
		}
		var row struct{ ID int }
		mustUnmarshal(t, e.After, &row)
		reads[row.ID]++
	}
	for id := 1; id <= 3000; id++ {
		want := 0
		if id%3 == 0 {
			want = 1
		}
		if reads[id] != want {
			t.Errorf("row %d read %d times, want %d", id, reads[id], want)
		}
	}

	// A cancel stops the job after the chunk in flight: hold the acks so
	// that the first chunk stays in flight.
	sk.pause()
	req2, err := RequestSnapshot(ctx, cfg, []string{"public.r"}, "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the second snapshot's first chunk", func() bool { return countReads(sk) > len(reads)+0 })
	if _, err := CancelSnapshot(ctx, cfg, req2.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	sk.resume()
	job := waitJob(t, r, req2.ID, func(j SnapshotInfo) bool { return j.Finished != "" })
	if !job.Cancelled || job.Tables[0].State != tableCancelled || job.Tables[0].Rows >= 3000 {
		t.Errorf("cancelled job: %+v", job)
	}

	// --status reads the jobs from the store.
	infos, err := Snapshots(ctx, cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(infos)
	if !strings.Contains(string(got), req.ID) || !strings.Contains(string(got), req2.ID) {
		t.Errorf("snapshots in the store: %s; want %s and %s", got, req.ID, req2.ID)
	}

	held, peak, n := b.state()
	t.Logf("budget: %d reservations, peak %d bytes, %d held at the end", n, peak, held)
	if held != 0 {
		t.Errorf("%d bytes of the sink's budget still reserved after the snapshots", held)
	}
	if n == 0 || peak > 2*(b.size/4)+64<<10 {
		t.Errorf("%d reservations, peak %d bytes; want some, and at most two chunks of %d bytes", n, peak, b.size/4)
	}
}

func countReads(s *sink) int {
	n := 0
	for _, e := range s.snapshot() {
		if e.Op == cdc.OpRead {
			n++
		}
	}
	return n
}

// waitJob waits until the source lists snapshot id in a state that done
// accepts, and returns it.
func waitJob(t *testing.T, r *running, id string, done func(SnapshotInfo) bool) SnapshotInfo {
	t.Helper()
	var job SnapshotInfo
	waitFor(t, 60*time.Second, "snapshot "+id, func() bool {
		for _, j := range r.src.Status().(Status).Snapshots {
			if j.ID == id && done(j) {
				job = j
				return true
			}
		}
		return false
	})
	return job
}

func TestCheckWhere(t *testing.T) {
	for where, want := range map[string]string{
		"":                            "",
		"id % 3 = 0":                  "",
		"(a > 1 AND (b < 2)) OR c":    "",
		"name = ')' OR name = '('":    "",
		`"odd)name" = 1`:              "",
		"x = E'\\')' AND y = 'it''s'": "",
		"x = $q$ ) $q$":               "",
		"a = 1 /* ) */":               "",
		"true) OR (true":              "without its '('",
		"(a = 1":                      "without its ')'",
		"a = 1) --":                   "without its '('",
		"a = 1 -- hide":               "comment",
		"a = 1; DROP TABLE x":         "';'",
		"a = 'open":                   "unterminated",
		"a = $q$ open":                "unterminated",
		"a = 1 /* open":               "unterminated",
	} {
		err := checkWhere(where)
		switch {
		case want == "" && err != nil:
			t.Errorf("checkWhere(%q) = %v, want nil", where, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("checkWhere(%q) = %v, want %q", where, err, want)
		}
	}
}
