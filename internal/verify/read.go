// Package verify reads back what cdcbridge wrote to a Kinesis stream and
// checks it against what the workload wrote, independently of the code
// under test's own reader (`cdcbridge tail`).
package verify

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/sink/kinesis/kpl"
)

// Record is one user record read from the stream, in shard order.
type Record struct {
	ShardID  string
	Sequence string // Kinesis sequence number of the (possibly aggregated) record
	Data     []byte
	Event    *cdc.Event // nil when Data is not a valid envelope
	Err      error      // why Data is not a valid envelope
}

// ReadAll reads every shard of stream from TRIM_HORIZON to its current end
// and returns the user records, each shard's in order, parents' shards
// before their children's.
func ReadAll(ctx context.Context, client *kinesis.Client, stream string) ([]Record, error) {
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
	sort.SliceStable(shards, func(i, j int) bool { return depth(shards, shards[i]) < depth(shards, shards[j]) })
	var all []Record
	for _, s := range shards {
		recs, err := readShard(ctx, client, stream, aws.ToString(s.ShardId))
		if err != nil {
			return nil, err
		}
		all = append(all, recs...)
	}
	return all, nil
}

// depth is the number of ancestors of s present in shards.
func depth(shards []types.Shard, s types.Shard) int {
	byID := map[string]types.Shard{}
	for _, x := range shards {
		byID[aws.ToString(x.ShardId)] = x
	}
	d := 0
	for p := aws.ToString(s.ParentShardId); p != ""; {
		ps, ok := byID[p]
		if !ok {
			break
		}
		d++
		p = aws.ToString(ps.ParentShardId)
	}
	return d
}

func readShard(ctx context.Context, client *kinesis.Client, stream, shard string) ([]Record, error) {
	it, err := client.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	if err != nil {
		return nil, fmt.Errorf("iterator for %s: %w", shard, err)
	}
	var out []Record
	iter := it.ShardIterator
	for iter != nil {
		page, err := client.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", shard, err)
		}
		for _, r := range page.Records {
			out = append(out, userRecords(shard, r)...)
		}
		if len(page.Records) == 0 && aws.ToInt64(page.MillisBehindLatest) == 0 {
			break
		}
		iter = page.NextShardIterator
	}
	return out, nil
}

func userRecords(shard string, r types.Record) []Record {
	seq := aws.ToString(r.SequenceNumber)
	datas := [][]byte{r.Data}
	if kpl.IsAggregated(r.Data) {
		recs, err := kpl.Decode(r.Data)
		if err != nil {
			return []Record{{ShardID: shard, Sequence: seq, Data: r.Data, Err: err}}
		}
		datas = datas[:0]
		for _, u := range recs {
			datas = append(datas, u.Data)
		}
	}
	out := make([]Record, 0, len(datas))
	for _, d := range datas {
		e, err := cdc.Decode(d)
		out = append(out, Record{ShardID: shard, Sequence: seq, Data: d, Event: e, Err: err})
	}
	return out
}

// Report summarises a stream read against the expected changes.
type Report struct {
	Records         int      // user records read
	Invalid         int      // records that are not valid envelopes
	Duplicates      int      // repeated source+id
	DuplicateDiffer []string // ids whose repeats differ in sequence or payload
	OrderViolations []string // partition keys whose first occurrences go backwards
}

// Check counts duplicates and order violations among first occurrences of
// each id: within a partition key, sequences must increase.
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
		if s, ok := last[pk]; ok && r.Event.Sequence <= s && r.Event.Sequence != "" {
			rep.OrderViolations = append(rep.OrderViolations, fmt.Sprintf("%s: %s after %s", r.Event.PartitionKey, r.Event.Sequence, s))
		}
		last[pk] = r.Event.Sequence
	}
	return rep, first
}
