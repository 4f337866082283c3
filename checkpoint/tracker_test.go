package checkpoint

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestTrackerOutOfOrder(t *testing.T) {
	var tr Tracker[uint64]
	now := time.Unix(100, 0)
	a, b := tr.Open(now), tr.Open(now.Add(time.Second))
	a.Add()
	a.Add()
	b.Add()
	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark before anything completed")
	}
	a.Seal(10)
	b.Seal(20)
	b.Done() // the later transaction completes first
	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark passed an unacknowledged event of an earlier span")
	}
	if old, _ := tr.Oldest(); !old.Equal(now) {
		t.Fatalf("oldest = %v, want %v", old, now)
	}
	a.Done()
	if w, _ := tr.Watermark(); w != 0 {
		t.Fatalf("watermark %d with one event of span a pending", w)
	}
	a.Done()
	if w, ok := tr.Watermark(); !ok || w != 20 {
		t.Fatalf("watermark = %d, %v; want 20", w, ok)
	}
	if !tr.Idle() || tr.Pending() != 0 {
		t.Fatal("tracker not idle after every ack")
	}
}

func TestTrackerOpenSpanHoldsWatermark(t *testing.T) {
	var tr Tracker[uint64]
	s := tr.Open(time.Now())
	s.Add()
	s.Done() // all events acked but the transaction is still open
	if _, ok := tr.Watermark(); ok || tr.Idle() {
		t.Fatal("an unsealed span let the watermark pass")
	}
	s.Seal(7)
	if w, _ := tr.Watermark(); w != 7 {
		t.Fatalf("watermark %d, want 7", w)
	}
}

func TestTrackerConcurrentAcks(t *testing.T) {
	var tr Tracker[int]
	const spans, per = 2000, 5
	all := make([]*Span[int], 0, spans)
	for i := range spans {
		s := tr.Open(time.Now())
		for range per {
			s.Add()
		}
		s.Seal(i + 1)
		all = append(all, s)
	}
	acks := make([]*Span[int], 0, spans*per)
	for _, s := range all {
		for range per {
			acks = append(acks, s)
		}
	}
	rand.Shuffle(len(acks), func(i, j int) { acks[i], acks[j] = acks[j], acks[i] })
	var wg sync.WaitGroup
	last := 0
	var mu sync.Mutex
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(acks); i += 4 {
				acks[i].Done()
				if m, ok := tr.Watermark(); ok {
					mu.Lock()
					if m < last {
						t.Errorf("watermark moved backwards: %d after %d", m, last)
					}
					last = max(last, m)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if w, _ := tr.Watermark(); w != spans {
		t.Fatalf("final watermark %d, want %d", w, spans)
	}
}

func TestTrackerDoneTooOftenPanics(t *testing.T) {
	var tr Tracker[int]
	s := tr.Open(time.Now())
	defer func() {
		if recover() == nil {
			t.Fatal("no panic on a second Done")
		}
	}()
	s.Done()
}

func TestTrackerWithdraw(t *testing.T) {
	var tr Tracker[uint64]
	a := tr.Open(time.Now())
	a.Add()
	a.Seal(10)
	b := tr.Open(time.Now())
	b.Add()
	b.Seal(20)
	if a.Withdraw() {
		t.Fatal("withdrew a span with a later span opened after it")
	}
	a.Done()
	if !b.Withdraw() {
		t.Fatal("the last span, its one event refused, was not dropped")
	}
	if w, ok := tr.Watermark(); !ok || w != 10 {
		t.Fatalf("watermark = %d, %v; want 10 (not past the withdrawn event)", w, ok)
	}
	if !tr.Idle() || tr.Pending() != 0 {
		t.Fatal("tracker not idle once the refused event was withdrawn")
	}
	c := tr.Open(time.Now())
	c.Add()
	c.Seal(30)
	c.Done()
	if w, _ := tr.Watermark(); w != 30 {
		t.Fatalf("watermark %d after the next span completed, want 30", w)
	}
}
