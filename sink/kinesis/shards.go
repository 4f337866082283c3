package kinesis

import (
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"golang.org/x/time/rate"

	"github.com/cdcbridge/cdcbridge/sink/kinesis/hashkey"
)

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
