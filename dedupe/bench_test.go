package dedupe

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkSeen runs a stream of changes to 5,000 rows in which one event
// in five is a redelivery of a recent one, through a full Filter that
// evicts on every new event.
func BenchmarkSeen(b *testing.B) {
	const n = 1 << 18
	ids := make([]string, n)
	pks := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%016X:%08d", i/4, i%4)
		pks[i] = fmt.Sprintf("public.orders:[%d]", i%5000)
	}
	for _, monotonic := range []bool{false, true} {
		b.Run(fmt.Sprintf("monotonic=%v", monotonic), func(b *testing.B) {
			cfg := Config{MaxKeys: 10_000, MaxAge: time.Hour, Monotonic: monotonic}
			f, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				j := i % n
				if j == 0 && i > 0 {
					// Sequences start again: so does the Filter.
					b.StopTimer()
					f, _ = New(cfg)
					b.StartTimer()
				}
				if i%5 == 4 {
					j = (i - 3) % n
				}
				f.Seen(src, ids[j], pks[j], ids[j])
				i++
			}
		})
	}
}
