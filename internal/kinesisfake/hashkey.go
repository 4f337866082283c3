package kinesisfake

import (
	"crypto/md5"
	"encoding/binary"
	"math/big"
)

// hashKey is a Kinesis hash key: a 128-bit unsigned integer.
type hashKey struct{ hi, lo uint64 }

var maxHashKey = hashKey{^uint64(0), ^uint64(0)}

// hashOf is the hash key Kinesis derives from a partition key: the MD5 of
// its UTF-8 bytes read as a big-endian integer.
func hashOf(pk string) hashKey {
	sum := md5.Sum([]byte(pk))
	return hashKey{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:])}
}

func (a hashKey) cmp(b hashKey) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

func (a hashKey) big() *big.Int {
	v := new(big.Int).SetUint64(a.hi)
	v.Lsh(v, 64)
	return v.Or(v, new(big.Int).SetUint64(a.lo))
}

func (a hashKey) String() string { return a.big().String() }

func fromBig(v *big.Int) hashKey {
	lo := new(big.Int).And(v, new(big.Int).SetUint64(^uint64(0)))
	hi := new(big.Int).Rsh(v, 64)
	return hashKey{hi.Uint64(), lo.Uint64()}
}

// parseHashKey parses a decimal hash key in [0, 2^128).
func parseHashKey(s string) (hashKey, bool) {
	if s == "" || len(s) > 39 || (len(s) > 1 && s[0] == '0') {
		return hashKey{}, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return hashKey{}, false
		}
	}
	v, ok := new(big.Int).SetString(s, 10)
	if !ok || v.BitLen() > 128 {
		return hashKey{}, false
	}
	return fromBig(v), true
}

// splitRange divides [lo, hi] into n contiguous ranges of near-equal size.
func splitRange(lo, hi hashKey, n int) [][2]hashKey {
	l, h := lo.big(), hi.big()
	width := new(big.Int).Sub(h, l)
	width.Add(width, big.NewInt(1))
	out := make([][2]hashKey, n)
	start := new(big.Int).Set(l)
	for i := range n {
		end := new(big.Int).Mul(width, big.NewInt(int64(i+1)))
		end.Div(end, big.NewInt(int64(n)))
		end.Add(end, l)
		end.Sub(end, big.NewInt(1))
		out[i] = [2]hashKey{fromBig(start), fromBig(end)}
		start = new(big.Int).Add(end, big.NewInt(1))
	}
	return out
}
