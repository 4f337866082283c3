package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/dedupe"
	"github.com/cdcbridge/cdcbridge/kpl"
)

const tailUsage = `Usage: cdcbridge tail [flags]

Reads the stream (CDCBRIDGE_KINESIS_STREAM or --stream): every shard, closed
parents before their children; de-aggregates KPL records; drops duplicates
by source+id; prints one envelope per line on stdout. Problems go to stderr.

Flags:
`

type tailOptions struct {
	stream    string
	from      string
	at        time.Time
	follow    bool
	monotonic bool
	window    int
	poll      time.Duration
}

func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o tailOptions
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, tailUsage); fs.PrintDefaults() }
	fs.StringVar(&o.stream, "stream", os.Getenv("CDCBRIDGE_KINESIS_STREAM"), "stream name or ARN")
	fs.StringVar(&o.from, "from", "trim_horizon", "where to start: trim_horizon, latest or at-timestamp (with --at)")
	at := fs.String("at", "", "RFC 3339 time for --from at-timestamp")
	fs.BoolVar(&o.follow, "follow", false, "keep reading new records; otherwise stop when every shard is drained")
	fs.BoolVar(&o.monotonic, "monotonic", false, "also drop events whose sequence is at or below the last one printed for their partition key")
	fs.IntVar(&o.window, "window", dedupe.DefaultMaxKeys, "how many event ids to remember for duplicate detection")
	fs.DurationVar(&o.poll, "poll", time.Second, "wait between reads of a shard that returned nothing")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	var problems []string
	if o.stream == "" {
		problems = append(problems, "tail: no stream: set CDCBRIDGE_KINESIS_STREAM or --stream")
	}
	switch o.from {
	case "trim_horizon", "latest":
	case "at-timestamp":
		t, err := time.Parse(time.RFC3339Nano, *at)
		if err != nil {
			problems = append(problems, fmt.Sprintf("tail: --at %q is not an RFC 3339 time (2026-11-26T10:00:00Z)", *at))
		}
		o.at = t
	default:
		problems = append(problems, fmt.Sprintf("tail: --from %q: want trim_horizon, latest or at-timestamp", o.from))
	}
	if len(problems) > 0 {
		fmt.Fprintln(stderr, strings.Join(problems, "\n"))
		return exitConfig
	}
	awsCfg, err := loadAWSConfig(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "tail:", err)
		return exitFailed
	}
	filter, err := dedupe.New(dedupe.Config{MaxKeys: o.window, Monotonic: o.monotonic})
	if err != nil {
		fmt.Fprintln(stderr, "tail:", err)
		return exitConfig
	}
	t := &tailer{opts: o, client: kinesis.NewFromConfig(awsCfg), filter: filter, out: stdout, errOut: stderr}
	if err := t.run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "tail:", err)
		return exitFailed
	}
	return exitOK
}

type tailer struct {
	opts   tailOptions
	client *kinesis.Client
	filter *dedupe.Filter

	mu     sync.Mutex // guards filter and the outputs
	out    io.Writer
	errOut io.Writer
}

func (t *tailer) streamParams() (name, arn *string) {
	if strings.HasPrefix(t.opts.stream, "arn:") {
		return nil, aws.String(t.opts.stream)
	}
	return aws.String(t.opts.stream), nil
}

func (t *tailer) listShards(ctx context.Context) ([]types.Shard, error) {
	name, arn := t.streamParams()
	var shards []types.Shard
	in := &kinesis.ListShardsInput{StreamName: name, StreamARN: arn}
	for {
		out, err := t.client.ListShards(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("listing shards of %s: %w", t.opts.stream, err)
		}
		shards = append(shards, out.Shards...)
		if out.NextToken == nil {
			return shards, nil
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

// run reads every shard; a child starts once all its parents are drained.
// Without --follow it returns when every shard is drained: a closed shard
// at its end, an open one when a read returns nothing and is not behind.
func (t *tailer) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		started = map[string]bool{}
		done    = map[string]bool{}
		wg      sync.WaitGroup
		errs    = make(chan error, 1)
	)
	var start func(shards []types.Shard)
	start = func(shards []types.Shard) {
		mu.Lock()
		defer mu.Unlock()
		known := map[string]bool{}
		for _, s := range shards {
			known[aws.ToString(s.ShardId)] = true
		}
		for _, s := range shards {
			id := aws.ToString(s.ShardId)
			if started[id] || !parentsDone(s, known, done) {
				continue
			}
			started[id] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := t.readShard(ctx, id); err != nil {
					select {
					case errs <- err:
					default:
					}
					cancel()
					return
				}
				mu.Lock()
				done[id] = true
				mu.Unlock()
				start(shards) // children may be ready now
			}()
		}
	}
	shards, err := t.listShards(ctx)
	if err != nil {
		return err
	}
	start(shards)
	if t.opts.follow { // pick up shards created by resharding
		go func() {
			tick := time.NewTicker(30 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if s, err := t.listShards(ctx); err == nil {
						start(s)
					}
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return ctx.Err()
	}
}

func parentsDone(s types.Shard, known, done map[string]bool) bool {
	for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
		id := aws.ToString(p)
		if id != "" && known[id] && !done[id] {
			return false
		}
	}
	return true
}

func (t *tailer) readShard(ctx context.Context, shardID string) error {
	name, arn := t.streamParams()
	in := &kinesis.GetShardIteratorInput{StreamName: name, StreamARN: arn, ShardId: aws.String(shardID)}
	switch t.opts.from {
	case "latest":
		in.ShardIteratorType = types.ShardIteratorTypeLatest
	case "at-timestamp":
		in.ShardIteratorType = types.ShardIteratorTypeAtTimestamp
		in.Timestamp = aws.Time(t.opts.at)
	default:
		in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
	}
	it, err := t.client.GetShardIterator(ctx, in)
	if err != nil {
		return fmt.Errorf("shard %s: %w", shardID, err)
	}
	iter := it.ShardIterator
	timer := time.NewTimer(0)
	defer timer.Stop()
	for iter != nil {
		out, err := t.client.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, StreamARN: arn})
		if err != nil {
			return fmt.Errorf("reading shard %s: %w", shardID, err)
		}
		for _, r := range out.Records {
			t.print(shardID, r)
		}
		iter = out.NextShardIterator
		if iter == nil {
			return nil // closed shard read to its end
		}
		if len(out.Records) == 0 {
			if !t.opts.follow && aws.ToInt64(out.MillisBehindLatest) == 0 {
				return nil
			}
			timer.Reset(t.opts.poll)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		}
	}
	return nil
}

func (t *tailer) print(shardID string, r types.Record) {
	seq := aws.ToString(r.SequenceNumber)
	datas := [][]byte{r.Data}
	if kpl.IsAggregated(r.Data) || kpl.IsCompressed(r.Data) {
		recs, err := kpl.Decode(r.Data)
		if err != nil {
			t.warn("shard %s record %s: %v", shardID, seq, err)
			return
		}
		datas = datas[:0]
		for _, u := range recs {
			datas = append(datas, u.Data)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range datas {
		e, err := cdc.Decode(d)
		if err != nil {
			fmt.Fprintf(t.errOut, "shard %s record %s: not a cdcbridge envelope: %v\n", shardID, seq, err)
			continue
		}
		id, seq := e.ID, e.Sequence
		if e.Replayed {
			// A replay from the dead-letter directory repeats the id and
			// sequence of its placeholder on purpose: show it once.
			id, seq = e.ID+" replayed", ""
		}
		if dup, _ := t.filter.Seen(e.Source, id, e.PartitionKey, seq); dup {
			continue
		}
		t.out.Write(d)
		if len(d) == 0 || d[len(d)-1] != '\n' {
			t.out.Write([]byte{'\n'})
		}
	}
}

func (t *tailer) warn(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.errOut, format+"\n", args...)
}
