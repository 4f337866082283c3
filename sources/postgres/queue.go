package postgres

import (
	"context"
	"sync"
	"time"
)

// item is one message from the server for the decoder.
type item struct {
	data       []byte // pgoutput message (XLogData payload); nil for a keepalive
	walEnd     uint64 // keepalive: the server's WAL end
	serverTime time.Time
	// ctl, when set, is run by the decoder at this place in the stream
	// (snapshot chunks; see marks.go).
	ctl func(context.Context, *decoder) error
}

// queue hands messages from the receiving goroutine to the decoding one.
// It is bounded in bytes, so a transaction of any size passes through in
// bounded memory; a single message larger than the bound is admitted when
// the queue is empty.
type queue struct {
	mu       sync.Mutex
	items    []item
	head     int
	bytes    int
	maxBytes int
	notEmpty chan struct{} // signalled when an item is added
	space    chan struct{} // signalled when an item is taken
}

func newQueue(maxBytes int) *queue {
	return &queue{maxBytes: maxBytes, notEmpty: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// tryPush adds it unless that would exceed the byte bound (keepalives,
// being tiny, always fit).
func (q *queue) tryPush(it item) bool {
	q.mu.Lock()
	n := len(it.data)
	if it.data != nil && q.bytes > 0 && q.bytes+n > q.maxBytes {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, it)
	q.bytes += n
	q.mu.Unlock()
	signal(q.notEmpty)
	return true
}

// pop waits for the next item.
func (q *queue) pop(ctx context.Context) (item, error) {
	for {
		q.mu.Lock()
		if q.head < len(q.items) {
			it := q.items[q.head]
			q.items[q.head] = item{}
			q.head++
			q.bytes -= len(it.data)
			if q.head == len(q.items) {
				q.items, q.head = q.items[:0], 0
			} else if q.head > 1024 && q.head*2 > len(q.items) {
				n := copy(q.items, q.items[q.head:])
				clear(q.items[n:])
				q.items, q.head = q.items[:n], 0
			}
			q.mu.Unlock()
			signal(q.space)
			return it, nil
		}
		q.mu.Unlock()
		select {
		case <-q.notEmpty:
		case <-ctx.Done():
			return item{}, ctx.Err()
		}
	}
}

// empty reports whether the decoder has taken every item.
func (q *queue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.head == len(q.items)
}
