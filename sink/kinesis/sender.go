package kinesis

import (
	"context"
	"time"
)

// senders send the loop's batches: Run starts MaxInFlight goroutines on
// run, each sending one request at a time. A batch belongs to the sender
// that took it from in until the sender puts it, with its outcome, on out.
type senders struct {
	put     putter
	timeout time.Duration // RequestTimeout: one attempt, connecting included
	in      <-chan *batch
	out     chan<- *batch // capacity MaxInFlight: never blocks
}

// putter sends one batch and fills b.res on success: the wire writer
// (wire.go).
type putter interface {
	put(ctx context.Context, b *batch) error
}

func (s *senders) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-s.in:
			actx, cancel := context.WithTimeout(ctx, s.timeout)
			b.err = s.put.put(actx, b)
			cancel()
			b.dur = time.Since(b.sentAt)
			s.out <- b
		}
	}
}
