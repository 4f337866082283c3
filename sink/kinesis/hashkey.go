package kinesis

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math/big"
)

// hashKey is a Kinesis hash key: a 128-bit unsigned integer.
type hashKey struct{ hi, lo uint64 }

// hashOf is the hash key Kinesis derives from a partition key: the MD5
// digest of its UTF-8 bytes read as a big-endian integer.
func hashOf(pk string) hashKey {
	sum := md5.Sum([]byte(pk))
	return hashKey{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:])}
}

func (a hashKey) less(b hashKey) bool {
	return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo)
}

// parseHashKey parses a decimal hash key in [0, 2^128).
func parseHashKey(s string) (hashKey, error) {
	v, ok := new(big.Int).SetString(s, 10)
	if !ok || v.Sign() < 0 || v.BitLen() > 128 {
		return hashKey{}, fmt.Errorf("invalid hash key %q", s)
	}
	lo := new(big.Int).And(v, new(big.Int).SetUint64(^uint64(0)))
	hi := new(big.Int).Rsh(v, 64)
	return hashKey{hi.Uint64(), lo.Uint64()}, nil
}
