package kinesisfake

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/cdcbridge/cdcbridge/hashkey"
)

// nullStream is the one stream a null-mode server holds. It keeps no
// records, only the shard map and sequence counters; guarded by Server.mu.
type nullStream struct {
	name, arn string
	status    string
	mode      string
	created   time.Time
	shards    []*nullShard // every shard ever, in creation order
	nextID    int
	seq       uint64
}

type nullShard struct {
	id               string
	parent, adjacent string
	lo, hi           hashkey.Key
	open             bool
	startSeq, endSeq string
}

func newNullStream(name string, shards int, onDemand bool) *nullStream {
	s := &nullStream{
		name:    name,
		arn:     "arn:aws:kinesis:us-east-1:000000000000:stream/" + name,
		status:  "ACTIVE",
		mode:    "PROVISIONED",
		created: time.Now(),
	}
	if onDemand {
		s.mode = "ON_DEMAND"
	}
	for _, r := range splitRange(hashkey.Key{}, hashkey.Max, shards) {
		s.addShard(r[0], r[1], "", "")
	}
	return s
}

func (s *nullStream) addShard(lo, hi hashkey.Key, parent, adjacent string) *nullShard {
	sh := &nullShard{
		id:       fmt.Sprintf("shardId-%012d", s.nextID),
		parent:   parent,
		adjacent: adjacent,
		lo:       lo,
		hi:       hi,
		open:     true,
		startSeq: s.nextSeq(),
	}
	s.nextID++
	s.shards = append(s.shards, sh)
	return sh
}

// nextSeq returns a 56-digit sequence number, increasing over the stream.
func (s *nullStream) nextSeq() string {
	s.seq++
	var b [56]byte
	b[0], b[1] = '4', '9'
	v := s.seq
	for i := 55; i >= 2; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[:])
}

// route returns the open shard whose range holds h.
func (s *nullStream) route(h hashkey.Key) *nullShard {
	for _, sh := range s.shards {
		if sh.open && sh.lo.Compare(h) <= 0 && h.Compare(sh.hi) <= 0 {
			return sh
		}
	}
	return nil
}

func (s *nullStream) openShards() []*nullShard {
	var out []*nullShard
	for _, sh := range s.shards {
		if sh.open {
			out = append(out, sh)
		}
	}
	return out
}

func (s *nullStream) find(id string) *nullShard {
	for _, sh := range s.shards {
		if sh.id == id {
			return sh
		}
	}
	return nil
}

// split closes an open shard and opens two children dividing its range.
func (s *nullStream) split(id string) ([2]string, error) {
	sh := s.find(id)
	if sh == nil || !sh.open {
		return [2]string{}, fmt.Errorf("shard %s is not open", id)
	}
	if sh.lo == sh.hi {
		return [2]string{}, fmt.Errorf("shard %s covers one hash key", id)
	}
	r := splitRange(sh.lo, sh.hi, 2)
	sh.open = false
	sh.endSeq = s.nextSeq()
	a := s.addShard(r[0][0], r[0][1], sh.id, "")
	b := s.addShard(r[1][0], r[1][1], sh.id, "")
	return [2]string{a.id, b.id}, nil
}

// merge closes two open shards with adjacent ranges and opens their union.
func (s *nullStream) merge(id1, id2 string) (string, error) {
	a, b := s.find(id1), s.find(id2)
	if a == nil || b == nil || !a.open || !b.open {
		return "", fmt.Errorf("shards %s and %s must both be open", id1, id2)
	}
	if b.lo.Less(a.lo) {
		a, b = b, a
	}
	next := a.hi
	next.Lo++
	if next.Lo == 0 {
		next.Hi++
	}
	if next != b.lo {
		return "", fmt.Errorf("shards %s and %s are not adjacent", id1, id2)
	}
	a.open, b.open = false, false
	a.endSeq, b.endSeq = s.nextSeq(), s.nextSeq()
	c := s.addShard(a.lo, b.hi, a.id, b.id)
	return c.id, nil
}

type shardJSON struct {
	ShardId               string `json:"ShardId"`
	ParentShardId         string `json:"ParentShardId,omitempty"`
	AdjacentParentShardId string `json:"AdjacentParentShardId,omitempty"`
	HashKeyRange          struct {
		StartingHashKey string `json:"StartingHashKey"`
		EndingHashKey   string `json:"EndingHashKey"`
	} `json:"HashKeyRange"`
	SequenceNumberRange struct {
		StartingSequenceNumber string `json:"StartingSequenceNumber"`
		EndingSequenceNumber   string `json:"EndingSequenceNumber,omitempty"`
	} `json:"SequenceNumberRange"`
}

// listShards answers ListShards with every shard (open and closed, as
// Kinesis does without a filter), pages of limit shards.
func (s *nullStream) listShards(body []byte) ([]byte, string, string) {
	var in struct {
		StreamName, StreamARN, NextToken, ExclusiveStartShardId string
		MaxResults                                              int
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, "SerializationException", err.Error()
	}
	if code, msg := s.checkName(in.StreamName, in.StreamARN); code != "" && in.NextToken == "" {
		return nil, code, msg
	}
	start := 0
	if in.NextToken != "" {
		n, err := strconv.Atoi(in.NextToken)
		if err != nil {
			return nil, "InvalidArgumentException", "bad NextToken"
		}
		start = n
	} else if in.ExclusiveStartShardId != "" {
		start = sort.Search(len(s.shards), func(i int) bool { return s.shards[i].id > in.ExclusiveStartShardId })
	}
	limit := in.MaxResults
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	end := min(start+limit, len(s.shards))
	out := struct {
		Shards    []shardJSON `json:"Shards"`
		NextToken string      `json:"NextToken,omitempty"`
	}{Shards: []shardJSON{}}
	for _, sh := range s.shards[start:end] {
		var j shardJSON
		j.ShardId = sh.id
		j.ParentShardId = sh.parent
		j.AdjacentParentShardId = sh.adjacent
		j.HashKeyRange.StartingHashKey = sh.lo.String()
		j.HashKeyRange.EndingHashKey = sh.hi.String()
		j.SequenceNumberRange.StartingSequenceNumber = sh.startSeq
		j.SequenceNumberRange.EndingSequenceNumber = sh.endSeq
		out.Shards = append(out.Shards, j)
	}
	if end < len(s.shards) {
		out.NextToken = strconv.Itoa(end)
	}
	b, _ := json.Marshal(out)
	return b, "", ""
}

func (s *nullStream) checkName(name, arn string) (code, msg string) {
	if (name == "" || name == s.name) && (arn == "" || arn == s.arn) && (name != "" || arn != "") {
		if s.status == "DELETED" {
			return "ResourceNotFoundException", fmt.Sprintf("Stream %s under account 000000000000 not found.", s.name)
		}
		return "", ""
	}
	if name == "" && arn == "" {
		return "ValidationException", "StreamName or StreamARN is required"
	}
	return "ResourceNotFoundException", fmt.Sprintf("Stream %s%s under account 000000000000 not found.", name, arn)
}

// summary is the DescribeStreamSummary answer before overrides.
func (s *nullStream) summary() map[string]any {
	return map[string]any{
		"StreamName":              s.name,
		"StreamARN":               s.arn,
		"StreamStatus":            s.status,
		"StreamModeDetails":       map[string]any{"StreamMode": s.mode},
		"RetentionPeriodHours":    24,
		"StreamCreationTimestamp": float64(s.created.Unix()),
		"EnhancedMonitoring":      []any{map[string]any{"ShardLevelMetrics": []any{}}},
		"EncryptionType":          "NONE",
		"OpenShardCount":          len(s.openShards()),
		"ConsumerCount":           0,
	}
}
