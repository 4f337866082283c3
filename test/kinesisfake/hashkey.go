package kinesisfake

import (
	"math/big"

	"github.com/cdcbridge/cdcbridge/hashkey"
)

// parseHashKey parses an explicit hash key as PutRecords takes it: AWS's
// pattern 0|([1-9]\d{0,38}), so no leading zeros, in [0, 2^128).
func parseHashKey(s string) (hashkey.Key, bool) {
	if len(s) > 1 && s[0] == '0' {
		return hashkey.Key{}, false
	}
	k, err := hashkey.Parse(s)
	return k, err == nil
}

// splitRange divides [lo, hi] into n contiguous ranges of near-equal size.
func splitRange(lo, hi hashkey.Key, n int) [][2]hashkey.Key {
	l, h := lo.Big(), hi.Big()
	width := new(big.Int).Sub(h, l)
	width.Add(width, big.NewInt(1))
	out := make([][2]hashkey.Key, n)
	start := new(big.Int).Set(l)
	for i := range n {
		end := new(big.Int).Mul(width, big.NewInt(int64(i+1)))
		end.Div(end, big.NewInt(int64(n)))
		end.Add(end, l)
		end.Sub(end, big.NewInt(1))
		out[i] = [2]hashkey.Key{hashkey.FromBig(start), hashkey.FromBig(end)}
		start = new(big.Int).Add(end, big.NewInt(1))
	}
	return out
}
