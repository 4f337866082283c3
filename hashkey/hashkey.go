// Package hashkey is Kinesis's hash key arithmetic: the 128-bit key
// Kinesis derives from a partition key, and the decimal form in which
// shard ranges and explicit hash keys are written. The producer predicts
// each record's shard with it; test servers and benchmarks that route
// records to shards should use it too, so that all agree with Kinesis by
// construction.
package hashkey

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math/big"
	"math/bits"
)

// Key is a Kinesis hash key: a 128-bit unsigned integer, Hi its upper
// 64 bits.
type Key struct{ Hi, Lo uint64 }

// Max is the largest hash key, 2^128-1.
var Max = Key{^uint64(0), ^uint64(0)}

// Of returns the hash key Kinesis derives from a partition key: the MD5
// digest of its UTF-8 bytes read as a big-endian integer.
func Of(pk string) Key { return fromDigest(md5.Sum([]byte(pk))) }

// OfBytes is Of for a partition key held as bytes.
func OfBytes(pk []byte) Key { return fromDigest(md5.Sum(pk)) }

func fromDigest(sum [md5.Size]byte) Key {
	return Key{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:])}
}

// Less reports whether a < b.
func (a Key) Less(b Key) bool {
	return a.Hi < b.Hi || (a.Hi == b.Hi && a.Lo < b.Lo)
}

// Compare returns -1, 0 or +1 as a is less than, equal to or greater than b.
func (a Key) Compare(b Key) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// Parse parses a decimal hash key in [0, 2^128), as ListShards writes
// shard ranges and PutRecords takes explicit hash keys. It does not
// allocate.
func Parse(s string) (Key, error) {
	if s == "" || len(s) > 39 {
		return Key{}, fmt.Errorf("invalid hash key %q", s)
	}
	var k Key
	for i := 0; i < len(s); i++ {
		d := s[i] - '0'
		if d > 9 {
			return Key{}, fmt.Errorf("invalid hash key %q", s)
		}
		// k = k*10 + d, failing past 128 bits.
		hiHi, hiLo := bits.Mul64(k.Hi, 10)
		loHi, loLo := bits.Mul64(k.Lo, 10)
		lo, c := bits.Add64(loLo, uint64(d), 0)
		hi, c2 := bits.Add64(hiLo, loHi, c)
		if hiHi != 0 || c2 != 0 {
			return Key{}, fmt.Errorf("invalid hash key %q", s)
		}
		k = Key{hi, lo}
	}
	return k, nil
}

// FromBig returns the low 128 bits of v, which must not be negative.
func FromBig(v *big.Int) Key {
	lo := new(big.Int).And(v, new(big.Int).SetUint64(^uint64(0)))
	hi := new(big.Int).Rsh(v, 64)
	return Key{hi.Uint64(), lo.Uint64()}
}

// Big returns k as a big.Int, for range arithmetic.
func (a Key) Big() *big.Int {
	v := new(big.Int).SetUint64(a.Hi)
	v.Lsh(v, 64)
	return v.Or(v, new(big.Int).SetUint64(a.Lo))
}

// String writes k in decimal, the form Kinesis uses.
func (a Key) String() string { return a.Big().String() }
