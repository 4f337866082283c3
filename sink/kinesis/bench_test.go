package kinesis

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/testenv"
)

// Benchmarks put ~300-byte events over 10,000 keys with ORDERING=key and
// report events/s, the producer process's CPU time per event (user plus
// system, getrusage; event generation included, the endpoint excluded:
// the null endpoint runs in its own process), allocations per event and
// peak heap and RSS. One benchmark op is one event, so
//
//	go test -run XXX -bench Producer -benchtime 1000000x ./sink/kinesis/
//
// is a 1,000,000-event run. CDCBRIDGE_BENCH_ENDPOINT points the null
// cases at an already running nullkinesis instead of starting one.

var nullOnce struct {
	sync.Once
	url string
	err error
	cmd *exec.Cmd
}

// nullEndpoint starts test/kinesisfake/cmd/nullkinesis in its own
// process (512 shards, so that shard pacing does not bound the run).
func nullEndpoint(b *testing.B) string {
	if u := os.Getenv("CDCBRIDGE_BENCH_ENDPOINT"); u != "" {
		return u
	}
	nullOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nullkinesis")
		if err != nil {
			nullOnce.err = err
			return
		}
		bin := filepath.Join(dir, "nullkinesis")
		build := exec.Command("go", "build", "-o", bin, "github.com/cdcbridge/cdcbridge/test/kinesisfake/cmd/nullkinesis")
		if out, err := build.CombinedOutput(); err != nil {
			nullOnce.err = fmt.Errorf("building nullkinesis: %v\n%s", err, out)
			return
		}
		cmd := exec.Command(bin, "-shards", "512", "-stream", "null")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			nullOnce.err = err
			return
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			nullOnce.err = fmt.Errorf("nullkinesis: %v", err)
			return
		}
		nullOnce.url = strings.TrimSpace(line)
		nullOnce.cmd = cmd
	})
	if nullOnce.err != nil {
		b.Fatal(nullOnce.err)
	}
	return nullOnce.url
}

// workload generates events without allocating per event: the producer
// keeps only the envelope and OnAck, so an event goes back to the pool as
// soon as Put returns; ids and row images are shared.
type workload struct {
	keys   []string // partition keys
	rows   [][]byte // ~300-byte envelopes: after image per key
	ids    []string
	hot    bool
	pool   sync.Pool
	acked  atomic.Int64
	rng    *rand.Rand
	serial int
}

func newWorkload(nkeys int, hot bool) *workload {
	w := &workload{hot: hot, rng: rand.New(rand.NewPCG(1, 2))}
	for i := range nkeys {
		k := fmt.Sprintf("[%d]", i*7919)
		w.keys = append(w.keys, cdc.PartitionKey("public.orders", []byte(k)))
		w.rows = append(w.rows, fmt.Appendf(nil, `{"id":%d,"st":"paid"}`, i*7919))
	}
	for i := range 1 << 16 {
		w.ids = append(w.ids, cdc.ChangeID(uint64(0x16B3748+i), uint32(i%100+1)))
	}
	ack := func() { w.acked.Add(1) }
	w.pool.New = func() any {
		return &cdc.Event{Source: "/cdcbridge/postgres/7301234567890123456/app/s", Subject: "public.orders", Op: cdc.OpUpdate, OnAck: ack}
	}
	return w
}

func (w *workload) next() *cdc.Event {
	w.serial++
	var k int
	if w.hot && w.rng.IntN(10) == 0 {
		k = w.rng.IntN(10) // 10 hot keys take 10% of events
	} else {
		k = w.rng.IntN(len(w.keys))
	}
	e := w.pool.Get().(*cdc.Event)
	id := w.ids[w.serial&(len(w.ids)-1)]
	e.ID, e.Sequence = id, id
	e.PartitionKey = w.keys[k]
	e.Time = time.Unix(1764151502, 0)
	e.After = w.rows[k]
	e.Info = cdc.SourceInfo{CommitLSN: "0/16B3748", Ordinal: 3}
	return e
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func maxRSS() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss << 10
}

func runProducerBench(b *testing.B, endpoint, stream string, cfg Config, hot bool) {
	cfg.Stream = stream
	cfg.DLQDir = b.TempDir()
	p, err := New(cfg, NewClient(awsConfigFor(endpoint), cfg), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	w := newWorkload(10_000, hot)
	// Size one event for the report.
	size, _ := cdc.Encode(w.next())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	for !p.Ready() {
		select {
		case err := <-runErr:
			b.Fatalf("Run: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	runtime.GC()
	var peakHeap, peakLive atomic.Uint64
	stopSample := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		live := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			rtmetrics.Read(live)
			if v := live[0].Value.Uint64(); v > peakLive.Load() {
				peakLive.Store(v)
			}
			select {
			case <-stopSample:
				return
			case <-t.C:
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for range b.N {
		e := w.next()
		if err := p.Put(ctx, e); err != nil {
			b.Fatal(err)
		}
		w.pool.Put(e)
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	close(stopSample)
	if got := w.acked.Load(); got != int64(b.N) {
		b.Fatalf("%d of %d events acked", got, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/event")
	b.ReportMetric(float64(len(size)), "bytes/event")
	b.ReportMetric(float64(peakHeap.Load())/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(peakLive.Load())/(1<<20), "peak-live-MiB")
	b.ReportMetric(float64(maxRSS())/(1<<20), "max-rss-MiB")
	cancel()
	<-runErr
}

func BenchmarkProducer(b *testing.B) {
	b.Run("null/plain", func(b *testing.B) {
		runProducerBench(b, nullEndpoint(b), "null", Config{ShardHeadroom: 1}, false)
	})
	b.Run("null/aggregated", func(b *testing.B) {
		runProducerBench(b, nullEndpoint(b), "null", Config{ShardHeadroom: 1, Aggregate: true}, false)
	})
	b.Run("null/hotkeys", func(b *testing.B) {
		runProducerBench(b, nullEndpoint(b), "null", Config{ShardHeadroom: 1}, true)
	})
	b.Run("null/hotkeys-aggregated", func(b *testing.B) {
		runProducerBench(b, nullEndpoint(b), "null", Config{ShardHeadroom: 1, Aggregate: true}, true)
	})
	for _, agg := range []bool{false, true} {
		name := map[bool]string{false: "kinesalite/plain", true: "kinesalite/aggregated"}[agg]
		b.Run(name, func(b *testing.B) {
			k := testenv.Kinesalite(b)
			stream := testenv.UniqueName("bench")
			if err := k.CreateStream(context.Background(), stream, 32); err != nil {
				b.Fatal(err)
			}
			runProducerBench(b, k.Endpoint, stream, Config{ShardHeadroom: 1, Aggregate: agg}, false)
		})
	}
}
