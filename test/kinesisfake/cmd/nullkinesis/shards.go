package main

import (
	"sort"
	"sync/atomic"

	"github.com/cdcbridge/cdcbridge/hashkey"
)

type shardRange struct {
	id     string
	lo, hi hashkey.Key
	bytes  atomic.Int64 // data and partition keys of the records accepted
}

// shardMap is the stream's open shards sorted by range.
type shardMap struct{ shards []*shardRange }

func (m *shardMap) add(id string, lo, hi hashkey.Key) {
	m.shards = append(m.shards, &shardRange{id: id, lo: lo, hi: hi})
	sort.Slice(m.shards, func(i, j int) bool { return m.shards[i].lo.Less(m.shards[j].lo) })
}

func (m *shardMap) route(h hashkey.Key) *shardRange {
	i := sort.Search(len(m.shards), func(i int) bool { return h.Less(m.shards[i].lo) })
	return m.shards[max(i-1, 0)]
}

// topBytes is the most record bytes one shard accepted.
func (m *shardMap) topBytes() int64 {
	var top int64
	for _, s := range m.shards {
		top = max(top, s.bytes.Load())
	}
	return top
}
