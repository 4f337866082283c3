package postgres

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// budgetSink behaves like the Kinesis sink's back-pressure: Put blocks
// while the events in flight exceed a byte budget (one larger event is
// admitted alone), and acknowledgements arrive from another goroutine.
type budgetSink struct {
	budget int
	mu     sync.Mutex
	cond   *sync.Cond
	used   int
	queue  chan *cdc.Event
	check  func(*cdc.Event)
}

func newBudgetSink(budget int, check func(*cdc.Event)) *budgetSink {
	s := &budgetSink{budget: budget, queue: make(chan *cdc.Event, 1<<16), check: check}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func eventSize(e *cdc.Event) int {
	return 200 + len(e.Key) + len(e.After) + len(e.Before) + len(e.ID) + len(e.PartitionKey)
}

func (s *budgetSink) emit(ctx context.Context, e *cdc.Event) error {
	n := eventSize(e)
	s.mu.Lock()
	for s.used > 0 && s.used+n > s.budget {
		if ctx.Err() != nil {
			s.mu.Unlock()
			return ctx.Err()
		}
		s.cond.Wait()
	}
	s.used += n
	s.mu.Unlock()
	s.check(e)
	select {
	case s.queue <- e:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run acknowledges events in order, as a sink would after PutRecords.
func (s *budgetSink) run(ctx context.Context) {
	for {
		select {
		case e := <-s.queue:
			e.Ack()
			s.mu.Lock()
			s.used -= eventSize(e)
			s.cond.Broadcast()
			s.mu.Unlock()
		case <-ctx.Done():
			s.mu.Lock()
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
	}
}

// One transaction of a million rows passes with memory bounded by the
// in-flight budget, not by the transaction. CDCBRIDGE_TEST_BIG_TX_ROWS
// changes the count.
func TestLargeTransactionBoundedMemory(t *testing.T) {
	rows := 1_000_000
	if v := os.Getenv("CDCBRIDGE_TEST_BIG_TX_ROWS"); v != "" {
		rows, _ = strconv.Atoi(v)
	}
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE big (id int PRIMARY KEY, a text, b int8, c timestamptz)`)

	var mu sync.Mutex
	var count int
	var lastOrdinal uint32
	var commitLSN string
	var orderErr error
	var sawLast bool
	check := func(e *cdc.Event) {
		mu.Lock()
		defer mu.Unlock()
		count++
		if commitLSN == "" {
			commitLSN = e.Info.CommitLSN
		}
		if orderErr == nil && (e.Info.Ordinal != lastOrdinal+1 || e.Info.CommitLSN != commitLSN) {
			orderErr = fmt.Errorf("event %d: ordinal %d in %s after %d", count, e.Info.Ordinal, e.Info.CommitLSN, lastOrdinal)
		}
		lastOrdinal = e.Info.Ordinal
		if e.Info.LastInTx {
			sawLast = e.Info.Ordinal == uint32(rows) && e.Info.TxEndLSN != ""
		}
	}
	const budget = 8 << 20
	sk := newBudgetSink(budget, check)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sk.run(ctx)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}()
	start := time.Now()
	mustExec(t, conn, fmt.Sprintf(`INSERT INTO big SELECT g, md5(g::text) || md5((g+1)::text), g * 1000, '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %d) g`, rows))
	inserted := time.Since(start)
	waitFor(t, 10*time.Minute, "every row", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return count >= rows && sawLast
	})
	took := time.Since(start)
	close(stopSampling)
	<-sampled
	mu.Lock()
	defer mu.Unlock()
	if orderErr != nil {
		t.Fatal(orderErr)
	}
	if count != rows || !sawLast {
		t.Fatalf("%d events, last_in_tx on the last: %v", count, sawLast)
	}
	growth := int64(peak) - int64(base.HeapInuse)
	t.Logf("%d rows in one transaction: insert %s, all events %s after the insert began (%.0f events/s end to end); heap in use: base %d MiB, peak %d MiB (budget %d MiB)",
		rows, inserted.Round(time.Millisecond), took.Round(time.Millisecond), float64(rows)/took.Seconds(), base.HeapInuse>>20, peak>>20, budget>>20)
	// Holding the transaction would take hundreds of MiB (each event is
	// about 500 bytes with its strings); the bound leaves room for the
	// budget, the receive queue and the garbage collector's slack.
	if limit := int64(96 << 20); rows >= 100_000 && growth > limit {
		t.Errorf("heap grew by %d MiB, want under %d MiB", growth>>20, limit>>20)
	}
}

// One row larger than both the receive queue and the sink's budget is
// admitted alone. The figure logged is what README.md quotes for its
// memory cost.
func TestRowLargerThanBudget(t *testing.T) {
	_, url := newDB(t)
	conn := mustConn(t, url)
	mustExec(t, conn, `CREATE TABLE wide (id int PRIMARY KEY, doc text)`)
	var mu sync.Mutex
	var events, biggest int
	sk := newBudgetSink(1<<20, func(e *cdc.Event) {
		mu.Lock()
		events++
		biggest = max(biggest, len(e.After))
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sk.run(ctx)
	r := startSource(t, Config{URL: url, Snapshot: SnapshotNever}, newMemStore(), sk.emit)
	r.streaming(t)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.TotalAlloc-base.TotalAlloc)
			}
		}
	}()
	const rowBytes = 32 << 20
	mustExec(t, conn, fmt.Sprintf(`INSERT INTO wide SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, %d) g`, rowBytes/32))
	mustExec(t, conn, `INSERT INTO wide VALUES (2, 'small')`)
	waitFor(t, 60*time.Second, "both rows acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return events == 2 && r.src.Status().(Status).PendingEvents == 0
	})
	close(done)
	<-sampled
	t.Logf("a %d MiB row: %d MiB allocated while it passed (%.1f times its size)", rowBytes>>20, peak>>20, float64(peak)/rowBytes)
	if biggest < rowBytes {
		t.Errorf("largest after image %d bytes, want the whole %d-byte value", biggest, rowBytes)
	}
}
