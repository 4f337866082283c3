package kinesis

import (
	"context"
	"sync"
	"sync/atomic"
)

// intake is where Put hands records to the loop. It keeps the in-flight
// budget (Put blocks while it is used up, the loop returns it as events
// are acknowledged) and the flush epochs (Flush waits until every event
// of its epoch and the earlier ones is acknowledged). It is the only state
// callers and the loop share; mu guards all of it.
type intake struct {
	maxBytes  int64
	maxEvents int
	fatal     *fatal

	mu         sync.Mutex
	usedBytes  int64 // the records'
	usedEvents int
	heldBytes  int64         // request bodies and aggregates of requests in flight, and reservations
	queue      []*record     // Put since the loop last took them
	space      chan struct{} // closed when budget is released; nil when nobody waits
	epoch      uint64        // flush epoch of new events
	epochN     int           // unacked events of the current epoch
	older      map[uint64]int
	flushed    chan struct{} // closed when an older epoch completes
	stopped    bool

	wake     chan struct{} // to the loop: the queue became non-empty, or a Flush began
	flushers atomic.Int32  // Flush calls waiting: the loop sends without linger
	done     chan struct{} // closed when Run returns
}

func newIntake(maxBytes int64, maxEvents int, f *fatal) *intake {
	return &intake{
		maxBytes:  maxBytes,
		maxEvents: maxEvents,
		fatal:     f,
		older:     map[uint64]int{},
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// admit charges r to the budget, waiting for room, and queues it for the loop.
func (in *intake) admit(ctx context.Context, r *record) error {
	in.mu.Lock()
	for {
		if in.stopped {
			in.mu.Unlock()
			freeRecord(r)
			return ErrClosed
		}
		if in.usedEvents == 0 || (in.usedBytes+in.heldBytes+r.cost <= in.maxBytes && in.usedEvents < in.maxEvents) {
			break
		}
		ch := in.space
		if ch == nil {
			ch = make(chan struct{})
			in.space = ch
		}
		in.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			freeRecord(r)
			return ctx.Err()
		case <-in.fatal.done:
			freeRecord(r)
			return in.fatal.err
		}
		in.mu.Lock()
	}
	in.usedBytes += r.cost
	in.usedEvents++
	r.epoch = in.epoch
	in.epochN++
	in.queue = append(in.queue, r)
	signal := len(in.queue) == 1
	in.mu.Unlock()
	if signal {
		in.signal()
	}
	return nil
}

// signal wakes the loop.
func (in *intake) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// take hands the queued records to the loop, swapping in spare (an empty
// slice the loop is done with), and returns the budget in use.
func (in *intake) take(spare []*record) (recs []*record, usedBytes int64, usedEvents int) {
	in.mu.Lock()
	recs = in.queue
	in.queue = spare
	usedBytes, usedEvents = in.usedBytes, in.usedEvents
	in.mu.Unlock()
	return recs, usedBytes, usedEvents
}

// release returns the budget of acknowledged records and completes the
// flush epochs they finish. It returns the budget still in use.
func (in *intake) release(recs []*record) (usedBytes int64, usedEvents int) {
	var bytes int64
	in.mu.Lock()
	for _, r := range recs {
		bytes += r.cost
		if r.epoch == in.epoch {
			in.epochN--
		} else if n := in.older[r.epoch] - 1; n > 0 {
			in.older[r.epoch] = n
		} else {
			delete(in.older, r.epoch)
			if in.flushed != nil {
				close(in.flushed)
				in.flushed = nil
			}
		}
	}
	in.usedBytes -= bytes
	in.usedEvents -= len(recs)
	if in.space != nil {
		close(in.space)
		in.space = nil
	}
	usedBytes, usedEvents = in.usedBytes, in.usedEvents
	in.mu.Unlock()
	return usedBytes, usedEvents
}

// hold charges n bytes of request bodies and aggregates to the budget
// until unhold: Put waits while records and these are over it together.
func (in *intake) hold(n int64) {
	in.mu.Lock()
	in.heldBytes += n
	in.mu.Unlock()
}

func (in *intake) unhold(n int64) {
	in.mu.Lock()
	in.heldBytes -= n
	if in.space != nil {
		close(in.space)
		in.space = nil
	}
	in.mu.Unlock()
}

// reserve charges n bytes of a source's memory (rows it holds before it
// emits them) to the budget, waiting while records, request bodies and
// other reservations fill it; it is admitted when nothing else is in the
// budget. unreserve returns them.
func (in *intake) reserve(ctx context.Context, n int64) error {
	in.mu.Lock()
	for in.usedEvents > 0 || in.heldBytes > 0 {
		if in.usedBytes+in.heldBytes+n <= in.maxBytes {
			break
		}
		if in.stopped {
			in.mu.Unlock()
			return ErrClosed
		}
		ch := in.space
		if ch == nil {
			ch = make(chan struct{})
			in.space = ch
		}
		in.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-in.fatal.done:
			return in.fatal.err
		}
		in.mu.Lock()
	}
	in.heldBytes += n
	in.mu.Unlock()
	return nil
}

// flush closes the current epoch and waits until it and every earlier
// one is acknowledged; meanwhile the loop sends without linger.
func (in *intake) flush(ctx context.Context) error {
	in.flushers.Add(1)
	defer in.flushers.Add(-1)
	in.signal()
	in.mu.Lock()
	target := in.epoch
	if in.epochN > 0 {
		in.older[in.epoch] = in.epochN
		in.epochN = 0
		in.epoch++
	}
	for {
		pending := false
		for e := range in.older {
			if e <= target {
				pending = true
				break
			}
		}
		if !pending {
			in.mu.Unlock()
			return nil
		}
		if in.stopped {
			in.mu.Unlock()
			return ErrClosed
		}
		if in.flushed == nil {
			in.flushed = make(chan struct{})
		}
		ch := in.flushed
		in.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-in.fatal.done:
			return in.fatal.err
		case <-in.done:
			return ErrClosed
		}
		in.mu.Lock()
	}
}

// flushing reports whether a Flush is waiting.
func (in *intake) flushing() bool { return in.flushers.Load() > 0 }

// used returns the budget in use.
func (in *intake) used() (usedBytes int64, usedEvents int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.usedBytes, in.usedEvents
}

// stop refuses further records and wakes every waiting Put and Flush.
func (in *intake) stop() {
	in.mu.Lock()
	in.stopped = true
	if in.space != nil {
		close(in.space)
		in.space = nil
	}
	in.mu.Unlock()
	close(in.done)
}
