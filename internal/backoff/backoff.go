// Package backoff is the bridge's one retry delay: a capped exponential
// backoff with jitter, and waits that end as soon as their context does.
//
// Waits use timers, never time.Sleep, so a shutdown never sits out a
// backoff.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Jitter is how a delay is drawn below its exponential ceiling.
type Jitter int

const (
	// Full draws uniformly from [0, ceiling]: retries of many records or
	// instances that failed together spread over the whole window.
	Full Jitter = iota
	// Equal draws uniformly from [ceiling/2, ceiling]: retries still
	// spread, but none comes much sooner than the ceiling.
	Equal
)

// Backoff is a capped exponential backoff. After n consecutive failures
// the ceiling is Base*2^(n-1), capped at Max (Max from the 31st failure
// on, and whenever Base is not positive), and the delay is drawn below it
// as Jitter says. Its counter is not safe for concurrent use.
type Backoff struct {
	Base, Max time.Duration
	Jitter    Jitter

	failures int
}

// Next counts a failure and returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return b.Delay(b.failures)
}

// Reset starts over: the next failure is the first.
func (b *Backoff) Reset() { b.failures = 0 }

// Wait counts a failure and waits its delay, or until ctx ends (it then
// returns ctx's error).
func (b *Backoff) Wait(ctx context.Context) error { return Wait(ctx, b.Next()) }

// Delay returns the delay after n consecutive failures (n < 1 counts as
// 1) without touching b's counter, for callers that keep their own counts
// (one per record, say).
func (b *Backoff) Delay(n int) time.Duration {
	d := Ceiling(b.Base, b.Max, n)
	if b.Jitter == Equal {
		return d/2 + rand.N(d/2+1)
	}
	return rand.N(d + 1)
}

// Ceiling is the longest delay after n consecutive failures:
// base*2^(n-1), capped at maxD.
func Ceiling(base, maxD time.Duration, n int) time.Duration {
	n = max(n, 1)
	if n < 31 && base > 0 && base <= (maxD-1)>>(n-1) {
		return base << (n - 1)
	}
	return maxD
}

// Wait waits d, or until ctx ends (it then returns ctx's error).
func Wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WaitBeating is Wait for a caller whose liveness is watched: it calls
// beat at once and then every interval until d has passed or ctx ends, so
// a long wait reads as normal, not as a wedged process.
func WaitBeating(ctx context.Context, d, interval time.Duration, beat func()) error {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		beat()
		select {
		case <-t.C:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
