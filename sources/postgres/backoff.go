package postgres

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is an exponential delay with full jitter between attempts.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func newBackoff() *backoff { return &backoff{min: 500 * time.Millisecond, max: 30 * time.Second} }

func (b *backoff) reset() { b.cur = 0 }

// next returns the delay before the next attempt.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

// wait sleeps for d, calling heartbeat every second, until ctx ends.
func wait(ctx context.Context, d time.Duration, heartbeat func()) error {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		heartbeat()
		select {
		case <-t.C:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// whileBlocked runs f, which may block for long (creating a slot waits
// for open transactions), calling heartbeat every second meanwhile: the
// wait is normal, the process is not wedged.
func whileBlocked(heartbeat func(), f func() error) error {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				heartbeat()
			}
		}
	}()
	defer close(done)
	return f()
}
