package kinesis

import (
	"math/rand/v2"
	"time"
)

// backoff returns the wait before attempt n+1 (n >= 1 failed attempts):
// exponential from base, capped at maxD, with full jitter (uniform in
// [0, cap]), which spreads retries of many records and producers apart.
func backoff(base, maxD time.Duration, n int) time.Duration {
	d := maxD
	if n < 1 {
		n = 1
	}
	if n < 31 {
		if e := base << (n - 1); e > 0 && e < maxD {
			d = e
		}
	}
	return rand.N(d + 1)
}
