package main

import (
	"crypto/md5"
	"encoding/binary"
	"math/bits"
	"sort"
)

// hashKey is a 128-bit Kinesis hash key.
type hashKey struct{ hi, lo uint64 }

func (a hashKey) less(b hashKey) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func hashOf(pk []byte) hashKey {
	sum := md5.Sum(pk)
	return hashKey{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:])}
}

// parseHashKey reads a decimal in [0, 2^128-1].
func parseHashKey(s string) (hashKey, bool) {
	if s == "" || len(s) > 39 {
		return hashKey{}, false
	}
	var h hashKey
	for i := 0; i < len(s); i++ {
		d := s[i] - '0'
		if d > 9 {
			return hashKey{}, false
		}
		// h = h*10 + d, failing on overflow past 128 bits.
		hiHi, hiLo := bits.Mul64(h.hi, 10)
		loHi, loLo := bits.Mul64(h.lo, 10)
		lo, c := bits.Add64(loLo, uint64(d), 0)
		hi, c2 := bits.Add64(hiLo, loHi, c)
		if hiHi != 0 || c2 != 0 {
			return hashKey{}, false
		}
		h = hashKey{hi, lo}
	}
	return h, true
}

type shardRange struct {
	id     string
	lo, hi hashKey
}

// shardMap is the stream's open shards sorted by range.
type shardMap struct{ shards []shardRange }

func (m *shardMap) add(id string, lo, hi hashKey) {
	m.shards = append(m.shards, shardRange{id: id, lo: lo, hi: hi})
	sort.Slice(m.shards, func(i, j int) bool { return m.shards[i].lo.less(m.shards[j].lo) })
}

func (m *shardMap) route(h hashKey) *shardRange {
	i := sort.Search(len(m.shards), func(i int) bool { return h.less(m.shards[i].lo) })
	return &m.shards[max(i-1, 0)]
}
