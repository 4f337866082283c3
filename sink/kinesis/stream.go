package kinesis

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// summary is what the producer uses of DescribeStreamSummary.
type summary struct {
	arn          string
	status       types.StreamStatus
	mode         types.StreamMode
	distribution types.RecordDistributionStrategy
	maxRecordKiB int // 1024 when absent
	openShards   int
}

// errAuto explains why per-key order is impossible on an AUTO stream.
func errAuto(stream string) error {
	return fmt.Errorf("stream %s uses RecordDistributionStrategy=AUTO: Kinesis then places records on shards by its own choice and ignores partition keys and explicit hash keys, so records of one row can land on different shards and be read out of order; with CDCBRIDGE_ORDERING=key the bridge refuses such a stream (switch the stream back to USER_PARTITION_KEY, or set CDCBRIDGE_ORDERING=none to accept per-row reordering)", stream)
}

func errAutoAggregate(stream string) error {
	return fmt.Errorf("stream %s uses RecordDistributionStrategy=AUTO: an aggregated record could land on a shard whose hash key range excludes some of its user records, and KCL de-aggregation drops those; disable CDCBRIDGE_KINESIS_AGGREGATE for this stream", stream)
}

// checkSummary returns the fatal error a summary calls for, if any.
func (c *control) checkSummary(s summary) error {
	switch s.status {
	case types.StreamStatusDeleting:
		return fmt.Errorf("stream %s is being deleted", c.label)
	}
	if s.distribution == types.RecordDistributionStrategyAuto {
		if c.cfg.Ordering == OrderingKey {
			return errAuto(c.label)
		}
		if c.cfg.aggregating() {
			return errAutoAggregate(c.label)
		}
	}
	return nil
}

func (c *control) describe(ctx context.Context) (summary, error) {
	name, arn := c.cfg.streamParams()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	out, err := c.client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: name, StreamARN: arn})
	if err != nil {
		return summary{}, err
	}
	d := out.StreamDescriptionSummary
	if d == nil {
		return summary{}, errors.New("DescribeStreamSummary returned no summary")
	}
	s := summary{
		arn:          aws.ToString(d.StreamARN),
		status:       d.StreamStatus,
		distribution: d.RecordDistributionStrategy,
		maxRecordKiB: defaultRecordKiB,
		openShards:   int(aws.ToInt32(d.OpenShardCount)),
	}
	if d.MaxRecordSizeInKiB != nil && *d.MaxRecordSizeInKiB > 0 {
		s.maxRecordKiB = int(*d.MaxRecordSizeInKiB)
	}
	if d.StreamModeDetails != nil {
		s.mode = d.StreamModeDetails.StreamMode
	}
	return s, nil
}

func (c *control) listShards(ctx context.Context) ([]types.Shard, error) {
	name, arn := c.cfg.streamParams()
	in := &kinesis.ListShardsInput{StreamName: name, StreamARN: arn}
	var all []types.Shard
	for {
		actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		out, err := c.client.ListShards(actx, in)
		cancel()
		if err != nil {
			return nil, err
		}
		all = append(all, out.Shards...)
		if out.NextToken == nil {
			return all, nil
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

// streamError names the stream and the operation in a fatal error.
func streamError(label, op string, err error) error {
	switch errorCode(err) {
	case "ResourceNotFoundException":
		return fmt.Errorf("stream %s not found (%s): %w", label, op, err)
	case "AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException",
		"InvalidClientTokenId", "MissingAuthenticationToken", "IncompleteSignature", "NotAuthorized":
		return fmt.Errorf("no permission for %s on stream %s (credentials refused or not authorised): %w", op, label, err)
	}
	return fmt.Errorf("%s on stream %s: %w", op, label, err)
}
