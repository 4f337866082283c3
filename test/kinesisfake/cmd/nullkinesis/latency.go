package main

import (
	"bytes"
	"slices"
	"sync"
	"time"
)

// latencies keeps every sample of the current window (a window at 5,000
// records/s for tens of seconds is a few hundred thousand float64s).
type latencies struct {
	mu      sync.Mutex
	samples []float64 // milliseconds
	bad     int64     // user records without a readable time attribute
	reads   int64     // snapshot reads, not counted: their time is not a commit's
}

var (
	timeAttr = []byte(`"time":"`)
	readType = []byte(`"type":"io.cdcbridge.read"`)
)

// add records now minus the envelope's commit time. The attribute is found
// by a byte search: the envelope writes it before "data", whose row images
// are the only other place the same bytes could appear.
func (l *latencies) add(now time.Time, envelope []byte) {
	if bytes.Contains(envelope, readType) {
		l.mu.Lock()
		l.reads++
		l.mu.Unlock()
		return
	}
	var ms float64
	ok := false
	if i := bytes.Index(envelope, timeAttr); i >= 0 {
		rest := envelope[i+len(timeAttr):]
		if j := bytes.IndexByte(rest, '"'); j > 0 {
			if t, err := time.Parse(time.RFC3339Nano, string(rest[:j])); err == nil {
				ms, ok = float64(now.Sub(t))/float64(time.Millisecond), true
			}
		}
	}
	l.mu.Lock()
	if ok {
		l.samples = append(l.samples, ms)
	} else {
		l.bad++
	}
	l.mu.Unlock()
}

// Summary is the latency of one window, in milliseconds.
type Summary struct {
	N   int   `json:"n"`
	Bad int64 `json:"bad"`
	// Reads: snapshot reads in the window, left out of the figures.
	Reads int64   `json:"reads"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func (l *latencies) summary(reset bool) Summary {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	bad, reads := l.bad, l.reads
	if reset {
		l.samples = l.samples[:0]
		l.bad, l.reads = 0, 0
	}
	l.mu.Unlock()
	out := Summary{N: len(s), Bad: bad, Reads: reads}
	if len(s) == 0 {
		return out
	}
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	out.P50, out.P99, out.Max, out.Mean = percentile(s, 0.50), percentile(s, 0.99), s[len(s)-1], sum/float64(len(s))
	return out
}

// percentile of sorted s by the nearest-rank method.
func percentile(s []float64, p float64) float64 {
	i := int(p*float64(len(s)) + 0.999999)
	return s[min(max(i-1, 0), len(s)-1)]
}
