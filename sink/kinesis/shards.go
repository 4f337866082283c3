package kinesis

import (
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"golang.org/x/time/rate"

	"github.com/cdcbridge/cdcbridge/hashkey"
)

// streamView is the stream as the loop last read it: its summary, the
// limits that follow from it and the shard map, with the keys whose
// aggregates wait for the next map.
type streamView struct {
	smap        *shardMap
	lim         limits
	sum         summary
	recordLimit int         // the stream's limit, at most MaxRequestBytes
	aggMax      int         // an aggregate's limit
	awaitMap    []*keyState // keys of misplaced aggregates, ready again with the next map
}

// apply takes the stream's record limit and settings.
func (v *streamView) apply(s summary, cfg *Config) {
	v.sum = s
	v.recordLimit = min(s.maxRecordKiB<<10, cfg.MaxRequestBytes)
	v.aggMax = v.recordLimit
	if cfg.AggregateMaxBytes > 0 {
		v.aggMax = min(cfg.AggregateMaxBytes, v.recordLimit)
	}
	v.lim = newLimits(cfg.ShardHeadroom, v.recordLimit)
	if v.smap != nil {
		v.smap.setLimits(v.lim)
	}
}

// install replaces the shard map with one built from list; it returns
// the map replaced (nil for the first).
func (v *streamView) install(list []types.Shard) (old *shardMap, err error) {
	var ver uint64 = 1
	if v.smap != nil {
		ver = v.smap.version + 1
	}
	m, err := newShardMap(list, v.smap, ver, v.lim)
	if err != nil {
		return nil, err
	}
	old, v.smap = v.smap, m
	return old, nil
}

// version is the current map's.
func (v *streamView) version() uint64 { return v.smap.version }

// current reports whether a prediction made with map version ver still
// holds.
func (v *streamView) current(ver uint64) bool { return ver == v.smap.version }

// shardOf returns the shard k's records are predicted to land in: the
// current map's shard for its hash key, cached until the map changes.
func (v *streamView) shardOf(k *keyState) *shard {
	if k.shard == nil || k.mapVer != v.smap.version {
		k.shard = v.smap.predict(k.hash)
		k.mapVer = v.smap.version
	}
	return k.shard
}

// park holds k until the next map is installed.
func (v *streamView) park(k *keyState) {
	k.parked = true
	v.awaitMap = append(v.awaitMap, k)
}

// unpark passes each parked key, no longer parked, to f.
func (v *streamView) unpark(f func(*keyState)) {
	for _, k := range v.awaitMap {
		k.parked = false
		f(k)
	}
	clear(v.awaitMap)
	v.awaitMap = v.awaitMap[:0]
}

// shard is an open shard as the producer predicts it: its hash key range,
// its token buckets and the keys ready to go to it.
type shard struct {
	id       string
	lo, hi   hashkey.Key
	startKey string // StartingHashKey, the explicit hash key of aggregates

	bytesLim, recsLim *rate.Limiter

	readyHead, readyTail *keyState
	readyN               int
	active               bool      // in the dispatcher's active list
	blockedUntil         time.Time // waiting for tokens
}

// shardMap is the open shards sorted by range.
type shardMap struct {
	version uint64
	shards  []*shard
	byID    map[string]*shard
}

// newShardMap builds a map from ListShards output, keeping the open
// shards (those without an ending sequence number). Limiters of shards
// that stay open carry over from old.
func newShardMap(list []types.Shard, old *shardMap, version uint64, lim limits) (*shardMap, error) {
	m := &shardMap{version: version, byID: map[string]*shard{}}
	for _, s := range list {
		if s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil {
			continue
		}
		if s.HashKeyRange == nil {
			return nil, fmt.Errorf("shard %s has no hash key range", aws.ToString(s.ShardId))
		}
		lo, err := hashkey.Parse(aws.ToString(s.HashKeyRange.StartingHashKey))
		if err != nil {
			return nil, fmt.Errorf("shard %s: %w", aws.ToString(s.ShardId), err)
		}
		hi, err := hashkey.Parse(aws.ToString(s.HashKeyRange.EndingHashKey))
		if err != nil {
			return nil, fmt.Errorf("shard %s: %w", aws.ToString(s.ShardId), err)
		}
		sh := &shard{id: aws.ToString(s.ShardId), lo: lo, hi: hi, startKey: aws.ToString(s.HashKeyRange.StartingHashKey)}
		if old != nil {
			if o := old.byID[sh.id]; o != nil {
				sh.bytesLim, sh.recsLim = o.bytesLim, o.recsLim
			}
		}
		if sh.bytesLim == nil {
			sh.bytesLim = rate.NewLimiter(rate.Limit(lim.shardBytes), lim.burstBytes)
			sh.recsLim = rate.NewLimiter(rate.Limit(lim.shardRecords), lim.burstRecords)
		}
		m.shards = append(m.shards, sh)
		m.byID[sh.id] = sh
	}
	if len(m.shards) == 0 {
		return nil, fmt.Errorf("no open shard")
	}
	sort.Slice(m.shards, func(i, j int) bool { return m.shards[i].lo.Less(m.shards[j].lo) })
	return m, nil
}

// predict returns the open shard whose range holds h. The ranges of open
// shards cover the hash key space; were they not to, the nearest one
// below is used and the put result corrects the map.
func (m *shardMap) predict(h hashkey.Key) *shard {
	i := sort.Search(len(m.shards), func(i int) bool { return h.Less(m.shards[i].lo) })
	if i == 0 {
		return m.shards[0]
	}
	return m.shards[i-1]
}

// limits are the per-shard token bucket settings.
type limits struct {
	shardBytes, shardRecords float64
	burstBytes, burstRecords int
}

func newLimits(headroom float64, maxRecord int) limits {
	l := limits{
		shardBytes:   shardBytesPerSecond * headroom,
		shardRecords: shardRecordsPerSecond * headroom,
	}
	l.burstBytes = max(int(l.shardBytes), maxRecord)
	l.burstRecords = max(int(l.shardRecords), 1)
	return l
}

// setLimits updates every shard's buckets (a new record size limit).
func (m *shardMap) setLimits(l limits) {
	now := time.Now()
	for _, s := range m.shards {
		if s.bytesLim.Burst() != l.burstBytes {
			s.bytesLim.SetBurstAt(now, l.burstBytes)
		}
	}
}
