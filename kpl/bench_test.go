package kpl

import (
	"fmt"
	"testing"
)

// benchInput is a typical batch: 500 envelopes of about 600 bytes over 100
// rows.
func benchInput() (keys []string, data [][]byte) {
	for i := range 500 {
		keys = append(keys, fmt.Sprintf("public.orders:[%d]", i%100))
		data = append(data, fmt.Appendf(nil, `{"specversion":"1.0","id":"00000000016B3748:%08d","data":{"pad":"%0560d"}}`, i, i))
	}
	return keys, data
}

func BenchmarkAggregate(b *testing.B) {
	keys, data := benchInput()
	var (
		a   Aggregator
		out []byte
	)
	b.ReportAllocs()
	for b.Loop() {
		a.Reset()
		for i, d := range data {
			a.Add(keys[i], d)
		}
		out = a.Bytes(out[:0])
	}
	b.SetBytes(int64(len(out)))
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(data)), "ns/record")
}

func BenchmarkDecode(b *testing.B) {
	keys, data := benchInput()
	var a Aggregator
	for i, d := range data {
		a.Add(keys[i], d)
	}
	blob := a.Bytes(nil)
	var recs []UserRecord
	b.SetBytes(int64(len(blob)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if recs, err = AppendDecode(recs[:0], blob); err != nil {
			b.Fatal(err)
		}
	}
}
