// Package checkpoint turns out-of-order acknowledgements into a safe
// position to confirm at the source, and defines where positions are kept.
//
// Guarantee: Watermark never returns a position past an event that is not
// acknowledged, nor past a span (a Postgres transaction, a DynamoDB record)
// that is still open, and it never moves backwards.
package checkpoint

import (
	"sync"
	"time"
)

// Tracker follows spans of events in source order. A span is a unit that is
// confirmed as a whole (a transaction): it is opened, events are added to it,
// it is sealed with the position to confirm once all its events are acked.
// Acks may arrive in any order; the watermark is the end position of the
// longest prefix of sealed spans whose events are all acked.
//
// A Tracker is safe for concurrent use: the source opens, adds and seals,
// the sink acks from its own goroutines.
type Tracker[P any] struct {
	mu      sync.Mutex
	spans   []*Span[P] // FIFO of spans not yet passed by the watermark
	head    int
	mark    P
	hasMark bool
	pending int // events added and not acked, over all spans
}

// Span is one unit of confirmation.
type Span[P any] struct {
	t       *Tracker[P]
	start   time.Time // commit time of the span, for lag
	pending int
	sealed  bool
	end     P
}

// Open starts a span whose events were committed at commitTime.
func (t *Tracker[P]) Open(commitTime time.Time) *Span[P] {
	s := &Span[P]{t: t, start: commitTime}
	t.mu.Lock()
	t.spans = append(t.spans, s)
	t.mu.Unlock()
	return s
}

// Add registers one more event of the span; call Done once when it is acked.
func (s *Span[P]) Add() {
	s.t.mu.Lock()
	s.pending++
	s.t.pending++
	s.t.mu.Unlock()
}

// Done acknowledges one event added with Add.
func (s *Span[P]) Done() {
	t := s.t
	t.mu.Lock()
	s.pending--
	t.pending--
	if s.pending < 0 {
		t.mu.Unlock()
		panic("checkpoint: Span.Done called more often than Add")
	}
	if s.pending == 0 && s.sealed {
		t.advance()
	}
	t.mu.Unlock()
}

// Withdraw takes back the one event of the last span opened, an event
// that was never handed over (the sink refused it), and drops the span:
// the watermark stays before its position and the source reads the event
// again. Any other span stays outstanding, since the watermark must not
// pass an event that was not sent; Withdraw reports whether it dropped s.
func (s *Span[P]) Withdraw() bool {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.spans)
	if s.pending != 1 || n == t.head || t.spans[n-1] != s {
		return false
	}
	s.pending--
	t.pending--
	t.spans[n-1] = nil
	t.spans = t.spans[:n-1]
	return true
}

// Seal closes the span: no more events will be added and end is the
// position to confirm once they are all acked.
func (s *Span[P]) Seal(end P) {
	t := s.t
	t.mu.Lock()
	s.sealed = true
	s.end = end
	if s.pending == 0 {
		t.advance()
	}
	t.mu.Unlock()
}

// advance pops every complete span at the head. Called with mu held.
func (t *Tracker[P]) advance() {
	for t.head < len(t.spans) {
		s := t.spans[t.head]
		if !s.sealed || s.pending > 0 {
			break
		}
		t.mark, t.hasMark = s.end, true
		t.spans[t.head] = nil
		t.head++
	}
	// Compact so the slice does not grow without bound.
	if t.head > 64 && t.head*2 >= len(t.spans) {
		n := copy(t.spans, t.spans[t.head:])
		clear(t.spans[n:])
		t.spans = t.spans[:n]
		t.head = 0
	}
}

// Watermark returns the end position of the last span such that it and
// every span before it are sealed and fully acknowledged; ok is false when
// no span has completed yet.
func (t *Tracker[P]) Watermark() (pos P, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mark, t.hasMark
}

// Idle reports whether nothing is outstanding: every opened span is sealed
// and acknowledged. Only then may a source confirm a position it did not
// emit (a keepalive's), since no change can be skipped by it.
func (t *Tracker[P]) Idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.head == len(t.spans)
}

// Pending returns the number of events added and not yet acknowledged.
func (t *Tracker[P]) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending
}

// Oldest returns the commit time of the oldest span not yet passed by the
// watermark (for the lag metric); ok is false when there is none.
func (t *Tracker[P]) Oldest() (commitTime time.Time, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head == len(t.spans) {
		return time.Time{}, false
	}
	return t.spans[t.head].start, true
}
