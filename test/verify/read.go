// Package verify reads back what cdcbridge wrote to a Kinesis stream and
// checks it against what a workload wrote, independently of the code under
// test: its own GetRecords loop over every shard (not `cdcbridge tail`), its
// own KPL de-aggregation written from the format's description (not
// kpl), and its own reading of the envelope contract, with
// the CloudEvents SDK as a second opinion.
//
// ReadAll returns every user record. Check counts duplicates and per-key
// order among first occurrences. Compare holds the records against a Log
// of the changes a workload committed and the dead-letter directory, and
// reports changes missing, order violations, duplicates, invalid records
// and placeholders without a dead-letter entry.
package verify

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// Record is one user record read from the stream, in shard order.
type Record struct {
	ShardID      string
	Sequence     string // Kinesis sequence number of the (possibly aggregated) record
	SubIndex     int    // position inside an aggregate (0 otherwise)
	Aggregated   bool
	Compressed   bool      // its aggregate came gzipped
	PartitionKey string    // the user record's partition key
	Arrival      time.Time // ApproximateArrivalTimestamp
	Data         []byte

	Env   *Envelope  // the verifier's reading; nil when Err is set
	Event *cdc.Event // the cdc package's reading, for callers that want it; nil when Err is set
	Err   error      // why this is not a valid cdcbridge record
}

// ReadAll reads every shard of stream from TRIM_HORIZON to its current end
// and returns the user records, each shard's in order, parents' shards
// before their children's.
func ReadAll(ctx context.Context, client *kinesis.Client, stream string) ([]Record, error) {
	return NewReader(client, stream).Read(ctx)
}

// Reader reads a stream again and again, each time only what was added
// since its last read: for tests that poll a stream until everything
// arrived, without reading it all from the start each time.
type Reader struct {
	client *kinesis.Client
	stream string
	shards map[string]*shardRead
}

type shardRead struct {
	recs    []Record
	lastSeq string // the last Kinesis record read; empty before the first
}

// NewReader returns a Reader of stream that has read nothing yet.
func NewReader(client *kinesis.Client, stream string) *Reader {
	return &Reader{client: client, stream: stream, shards: map[string]*shardRead{}}
}

// Read reads what every shard gained since the last Read and returns all
// user records read so far, as ReadAll orders them.
func (rd *Reader) Read(ctx context.Context) ([]Record, error) {
	shards, err := listShards(ctx, rd.client, rd.stream)
	if err != nil {
		return nil, err
	}
	var all []Record
	for _, s := range shards {
		id := aws.ToString(s.ShardId)
		sr := rd.shards[id]
		if sr == nil {
			sr = &shardRead{}
			rd.shards[id] = sr
		}
		if err := rd.readShard(ctx, s, sr); err != nil {
			return nil, err
		}
		all = append(all, sr.recs...)
	}
	return all, nil
}

func listShards(ctx context.Context, client *kinesis.Client, stream string) ([]types.Shard, error) {
	var shards []types.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(stream)}
	for {
		out, err := client.ListShards(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("listing shards of %s: %w", stream, err)
		}
		shards = append(shards, out.Shards...)
		if out.NextToken == nil {
			break
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
	byID := map[string]types.Shard{}
	for _, s := range shards {
		byID[aws.ToString(s.ShardId)] = s
	}
	depth := func(s types.Shard) int {
		d := 0
		for p := aws.ToString(s.ParentShardId); p != ""; d++ {
			ps, ok := byID[p]
			if !ok {
				break
			}
			p = aws.ToString(ps.ParentShardId)
		}
		return d
	}
	sort.SliceStable(shards, func(i, j int) bool { return depth(shards[i]) < depth(shards[j]) })
	return shards, nil
}

// One GetRecords asks for about pageBytes of records: a shard's first
// call asks for minLimit, and the limit of each next one follows the size
// of the records of the last, up to maxLimit. Kinesis caps an answer at
// 10 MB, kinesalite does not: two hundred records near 1 MiB make one
// answer of 200 MiB, and while kinesalite builds it every other test
// sharing it waits; while a stream of small records read a few hundred at
// a time takes a loaded kinesalite minutes.
const (
	pageBytes = 4 << 20
	minLimit  = 10
	maxLimit  = 5000
)

// callTimeout bounds one call: a loaded machine makes calls slow, but one
// that takes longer is stuck.
const callTimeout = time.Minute

func (rd *Reader) readShard(ctx context.Context, shard types.Shard, sr *shardRead) error {
	id := aws.ToString(shard.ShardId)
	lo, hi := hashRange(shard)
	in := &kinesis.GetShardIteratorInput{
		StreamName: aws.String(rd.stream), ShardId: aws.String(id), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	}
	if sr.lastSeq != "" {
		in.ShardIteratorType = types.ShardIteratorTypeAfterSequenceNumber
		in.StartingSequenceNumber = aws.String(sr.lastSeq)
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	it, err := rd.client.GetShardIterator(cctx, in)
	cancel()
	if err != nil {
		return fmt.Errorf("iterator for %s: %w", id, err)
	}
	start, calls, records, limit := time.Now(), 0, 0, minLimit
	iter := it.ShardIterator
	for iter != nil {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		page, err := rd.client.GetRecords(cctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(int32(limit))})
		cancel()
		calls++
		var throttled *types.ProvisionedThroughputExceededException
		if errors.As(err, &throttled) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s (call %d of this read, %d records read in %s): %w", id, calls, records, time.Since(start).Round(time.Millisecond), err)
		}
		size := 0
		for _, r := range page.Records {
			sr.recs = append(sr.recs, userRecords(id, r, lo, hi)...)
			sr.lastSeq = aws.ToString(r.SequenceNumber)
			size += len(r.Data) + len(aws.ToString(r.PartitionKey))
		}
		if n := len(page.Records); n > 0 {
			records += n
			limit = min(max(pageBytes/(size/n+1), minLimit), maxLimit)
		}
		if len(page.Records) == 0 && aws.ToInt64(page.MillisBehindLatest) == 0 {
			break
		}
		iter = page.NextShardIterator
	}
	return nil
}

func hashRange(s types.Shard) (lo, hi *big.Int) {
	lo, hi = new(big.Int), new(big.Int)
	if s.HashKeyRange != nil {
		lo.SetString(aws.ToString(s.HashKeyRange.StartingHashKey), 10)
		hi.SetString(aws.ToString(s.HashKeyRange.EndingHashKey), 10)
	}
	return lo, hi
}

// userRecords splits a Kinesis record into its user records and checks
// each: an aggregate must decode, each user record's hash key must fall in
// the shard it was read from (a KCL consumer drops it otherwise), and its
// partition key must be the envelope's partitionkey.
func userRecords(shard string, r types.Record, lo, hi *big.Int) []Record {
	base := Record{ShardID: shard, Sequence: aws.ToString(r.SequenceNumber), PartitionKey: aws.ToString(r.PartitionKey),
		Arrival: aws.ToTime(r.ApproximateArrivalTimestamp)}
	data := r.Data
	if base.Compressed = isGzip(data); base.Compressed {
		var err error
		if data, err = gunzip(data); err == nil && !isAggregate(data) {
			err = errors.New("a gzipped record that does not hold a KPL aggregate")
		}
		if err != nil {
			rec := base
			rec.Data, rec.Aggregated, rec.Err = r.Data, true, err
			return []Record{rec}
		}
	}
	if !isAggregate(data) {
		rec := base
		rec.Data = data
		rec.check("")
		return []Record{rec}
	}
	users, err := deaggregate(data)
	if err != nil {
		rec := base
		rec.Data, rec.Aggregated, rec.Err = r.Data, true, err
		return []Record{rec}
	}
	out := make([]Record, len(users))
	for i, u := range users {
		rec := base
		rec.SubIndex, rec.Aggregated, rec.PartitionKey, rec.Data = i, true, u.PartitionKey, u.Data
		rec.check(hashKeyProblem(u, lo, hi))
		out[i] = rec
	}
	return out
}

// check parses the record's envelope; problem is an earlier finding.
func (r *Record) check(problem string) {
	env, err := parseEnvelope(r.Data)
	switch {
	case err != nil:
		r.Err = err
	case problem != "":
		r.Err = fmt.Errorf("envelope %q: %s", env.ID, problem)
	case env.PartitionKey != r.PartitionKey:
		r.Err = fmt.Errorf("envelope %q: partitionkey %q, but the record's partition key is %q", env.ID, env.PartitionKey, r.PartitionKey)
	}
	if r.Err != nil {
		return
	}
	ev, err := cdc.Decode(r.Data)
	if err != nil {
		r.Err = fmt.Errorf("the cdc package cannot decode an envelope the verifier accepts: %w", err)
		return
	}
	r.Env, r.Event = env, ev
}

// hashKeyProblem says why a user record of an aggregate would be dropped
// by a consumer reading the shard with the given hash key range.
func hashKeyProblem(u aggUser, lo, hi *big.Int) string {
	h := new(big.Int)
	if u.ExplicitHashKey != "" {
		if _, ok := h.SetString(u.ExplicitHashKey, 10); !ok {
			return fmt.Sprintf("explicit hash key %q is not a decimal number", u.ExplicitHashKey)
		}
	} else {
		sum := md5.Sum([]byte(u.PartitionKey))
		h.SetBytes(sum[:])
	}
	if h.Cmp(lo) < 0 || h.Cmp(hi) > 0 {
		return fmt.Sprintf("hash key %s lies outside the shard's range [%s, %s]: a KCL consumer would drop it", h, lo, hi)
	}
	return ""
}

// Report summarises a stream read: duplicates and per-key order.
type Report struct {
	Records         int      // user records read
	Invalid         int      // records that are not valid envelopes
	Duplicates      int      // repeated source+id
	DuplicateDiffer []string // ids whose repeats differ in sequence or payload
	OrderViolations []string // partition keys whose first occurrences go backwards
}

// Check counts duplicates and order violations among first occurrences of
// each id: within a partition key, sequences must increase. It returns the
// first occurrence of every source+id.
func Check(recs []Record) (Report, map[string]*cdc.Event) {
	rep := Report{Records: len(recs)}
	first := map[string]*cdc.Event{}
	firstData := map[string]string{}
	last := map[string]string{} // partition key -> last sequence
	for _, r := range recs {
		if r.Event == nil {
			rep.Invalid++
			continue
		}
		k := r.Event.Source + " " + r.Event.ID
		if prev, ok := first[k]; ok {
			rep.Duplicates++
			if prev.Sequence != r.Event.Sequence || firstData[k] != string(r.Data) {
				rep.DuplicateDiffer = append(rep.DuplicateDiffer, r.Event.ID)
			}
			continue
		}
		first[k] = r.Event
		firstData[k] = string(r.Data)
		pk := r.Event.Source + " " + r.Event.PartitionKey
		if s, ok := last[pk]; ok && r.Event.Sequence != "" && r.Event.Sequence <= s {
			rep.OrderViolations = append(rep.OrderViolations, fmt.Sprintf("%s: %s after %s", r.Event.PartitionKey, r.Event.Sequence, s))
		}
		last[pk] = r.Event.Sequence
	}
	return rep, first
}
