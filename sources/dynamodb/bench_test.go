package dynamodb

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// BenchmarkSource reads 100,000 records from eight shards (four closed
// parents, four open children) of the scripted server into emit, which
// acknowledges at once. It reports events per second through the whole
// source: HTTP, the SDK's decoding, conversion, trackers and lineage.
func BenchmarkSource(b *testing.B) {
	const total = 100_000
	const parents = 4
	f := newFakeStreams(b)
	per := total / (2 * parents)
	for p := range parents {
		parent := fmt.Sprintf("shardId-p%d", p)
		child := fmt.Sprintf("shardId-c%d", p)
		f.addShard(parent, "")
		f.addShard(child, parent)
		for i := range per {
			f.put(parent, benchChange(p, i))
		}
		f.close(parent)
		for i := range per {
			f.put(child, benchChange(p, per+i))
		}
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		store := openFileStore(b, filepath.Join(b.TempDir(), "c.json"))
		s, err := New(testCfg(Config{StreamARN: f.arn}), nil, f.client(), store, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		var n atomic.Int64
		done := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		emit := func(_ context.Context, e *cdc.Event) error {
			e.Ack()
			if n.Add(1) == total {
				close(done)
			}
			return nil
		}
		errc := make(chan error, 1)
		go func() { errc <- s.Run(ctx, emit) }()
		select {
		case <-done:
		case err := <-errc:
			b.Fatalf("Run: %v after %d events", err, n.Load())
		case <-time.After(5 * time.Minute):
			b.Fatalf("%d events after 5 minutes", n.Load())
		}
		cancel()
		<-errc
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(total*b.N)/elapsed.Seconds(), "events/s")
}

// benchChange is a typical small item: composite key, a few attributes.
func benchChange(item, i int) fakeChange {
	keys := map[string]any{"pk": map[string]any{"S": fmt.Sprintf("customer#%d", item*1000+i%1000)}, "sk": map[string]any{"N": fmt.Sprint(i)}}
	img := map[string]any{
		"pk": keys["pk"], "sk": keys["sk"],
		"status": map[string]any{"S": "paid"},
		"total":  map[string]any{"N": "129.95"},
		"tags":   map[string]any{"SS": []string{"a", "b"}},
		"lines":  map[string]any{"L": []any{map[string]any{"M": map[string]any{"sku": map[string]any{"S": "X-1"}, "qty": map[string]any{"N": "2"}}}}},
	}
	return fakeChange{event: "MODIFY", keys: keys, oldImage: img, newImage: img}
}
