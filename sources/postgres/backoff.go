package postgres

import (
	"context"
	"time"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

// newBackoff is the delay between attempts to reconnect or to take the
// slot's lock: from 500ms doubling to 30s, each drawn between half and all
// of that (internal/backoff, equal jitter).
func newBackoff() *backoff.Backoff {
	return &backoff.Backoff{Base: 500 * time.Millisecond, Max: 30 * time.Second, Jitter: backoff.Equal}
}

// wait sleeps for d, calling heartbeat every second, until ctx ends.
func wait(ctx context.Context, d time.Duration, heartbeat func()) error {
	return backoff.WaitBeating(ctx, d, time.Second, heartbeat)
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
