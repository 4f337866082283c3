package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// poll stands in for Lambda's event source mapping: it reads every shard
// from its oldest record in batches, passes each batch to handle, and
// after a reported failure reads again from the failed record (as Lambda
// does). It keeps no checkpoint and ignores resharding (parents before
// children): Lambda or the KCL do both for real consumers. With
// untilIdle it returns once every shard is read to its current end.
func poll(ctx context.Context, client *kinesis.Client, stream string,
	handle func(context.Context, KinesisEvent) (BatchResponse, error), untilIdle bool) error {
	out, err := client.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		return fmt.Errorf("listing the shards of %s: %w", stream, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(out.Shards))
	for _, sh := range out.Shards {
		wg.Go(func() {
			if err := pollShard(ctx, client, stream, aws.ToString(sh.ShardId), handle, untilIdle); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	all := []error{ctx.Err()}
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func pollShard(ctx context.Context, client *kinesis.Client, stream, shard string,
	handle func(context.Context, KinesisEvent) (BatchResponse, error), untilIdle bool) error {
	it, err := iterator(ctx, client, stream, shard, types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		return err
	}
	for it != "" {
		out, err := client.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String(it), Limit: aws.Int32(100)})
		if err != nil {
			return fmt.Errorf("reading shard %s: %w", shard, err)
		}
		var ev KinesisEvent
		for _, r := range out.Records {
			ev.Records = append(ev.Records, KinesisEventRecord{
				EventID: shard + ":" + aws.ToString(r.SequenceNumber),
				Kinesis: KinesisRecord{Data: r.Data, PartitionKey: aws.ToString(r.PartitionKey), SequenceNumber: aws.ToString(r.SequenceNumber)},
			})
		}
		next := aws.ToString(out.NextShardIterator)
		if len(ev.Records) > 0 {
			resp, err := handle(ctx, ev)
			if err != nil {
				return err // Lambda retries the whole batch; here it stops
			}
			if len(resp.BatchItemFailures) > 0 {
				// Read again from the failed record, after a pause.
				if err := sleep(ctx, 100*time.Millisecond); err != nil {
					return err
				}
				if next, err = iterator(ctx, client, stream, shard, types.ShardIteratorTypeAtSequenceNumber, resp.BatchItemFailures[0].ItemIdentifier); err != nil {
					return err
				}
				it = next
				continue
			}
		}
		if len(out.Records) == 0 {
			if untilIdle && aws.ToInt64(out.MillisBehindLatest) == 0 {
				return nil
			}
			if err := sleep(ctx, time.Second); err != nil {
				return err
			}
		}
		it = next
	}
	return nil
}

func iterator(ctx context.Context, client *kinesis.Client, stream, shard string, typ types.ShardIteratorType, seq string) (string, error) {
	in := &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: aws.String(shard), ShardIteratorType: typ}
	if seq != "" {
		in.StartingSequenceNumber = aws.String(seq)
	}
	out, err := client.GetShardIterator(ctx, in)
	if err != nil {
		return "", fmt.Errorf("iterator for shard %s: %w", shard, err)
	}
	return aws.ToString(out.ShardIterator), nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
