package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// oldCeiling is the sink's formula before this package: the ceiling must
// stay the same for every input that does not overflow.
func oldCeiling(base, maxD time.Duration, n int) time.Duration {
	d := maxD
	if n < 1 {
		n = 1
	}
	if n < 31 {
		if e := base << (n - 1); e > 0 && e < maxD {
			d = e
		}
	}
	return d
}

func TestCeiling(t *testing.T) {
	tests := []struct {
		base, maxD time.Duration
		n          int
		want       time.Duration
	}{
		{100 * time.Millisecond, 10 * time.Second, 0, 100 * time.Millisecond},
		{100 * time.Millisecond, 10 * time.Second, 1, 100 * time.Millisecond},
		{100 * time.Millisecond, 10 * time.Second, 3, 400 * time.Millisecond},
		{100 * time.Millisecond, 10 * time.Second, 8, 10 * time.Second},
		{100 * time.Millisecond, 10 * time.Second, 1000, 10 * time.Second},
		{500 * time.Millisecond, 30 * time.Second, 7, 30 * time.Second},
		{2, 5, 2, 4},
		{2, 4, 2, 4},
		{time.Second, time.Millisecond, 1, time.Millisecond},
		{0, time.Second, 1, time.Second},
		{time.Hour << 10, math.MaxInt64, 30, math.MaxInt64}, // base*2^29 overflows
	}
	for _, tt := range tests {
		if got := Ceiling(tt.base, tt.maxD, tt.n); got != tt.want {
			t.Errorf("Ceiling(%v, %v, %d) = %v, want %v", tt.base, tt.maxD, tt.n, got, tt.want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		base := time.Duration(rng.Int64N(int64(time.Minute)))
		maxD := time.Duration(rng.Int64N(int64(time.Hour)))
		n := rng.IntN(40) - 2
		if n > 1 && n < 31 && base > math.MaxInt64>>(n-1) {
			continue // the old formula overflowed here
		}
		if got, want := Ceiling(base, maxD, n), oldCeiling(base, maxD, n); got != want {
			t.Fatalf("Ceiling(%v, %v, %d) = %v, the sink's formula %v", base, maxD, n, got, want)
		}
	}
}

func TestDelayBounds(t *testing.T) {
	for _, j := range []Jitter{Full, Equal} {
		b := Backoff{Base: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: j}
		for n := 1; n < 40; n++ {
			ceiling := Ceiling(b.Base, b.Max, n)
			floor := time.Duration(0)
			if j == Equal {
				floor = ceiling / 2
			}
			for range 50 {
				if d := b.Delay(n); d < floor || d > ceiling {
					t.Fatalf("jitter %d, failure %d: delay %v outside [%v, %v]", j, n, d, floor, ceiling)
				}
			}
		}
	}
}

func TestNextAndReset(t *testing.T) {
	b := Backoff{Base: time.Second, Max: time.Minute, Jitter: Equal}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if d := b.Next(); d < want/2 || d > want {
			t.Fatalf("failure %d: %v, want in [%v, %v]", i+1, d, want/2, want)
		}
	}
	b.Reset()
	if d := b.Next(); d > time.Second {
		t.Fatalf("after Reset: %v, want at most 1s", d)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Wait(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Wait: %v", err)
	}
	beats := 0
	if err := WaitBeating(ctx, time.Hour, time.Second, func() { beats++ }); err != context.Canceled || beats != 1 {
		t.Fatalf("WaitBeating: %v after %d beats", err, beats)
	}
	if time.Since(start) > time.Second {
		t.Fatal("a cancelled wait took its time")
	}
	if err := Wait(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	beats = 0
	if err := WaitBeating(context.Background(), 35*time.Millisecond, 10*time.Millisecond, func() { beats++ }); err != nil || beats < 2 {
		t.Fatalf("WaitBeating: %v, %d beats", err, beats)
	}
}
