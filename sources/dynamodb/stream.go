package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// ErrStreamGone is returned by Run when the stream no longer exists (its
// table was deleted, or it was disabled and has expired) or was disabled
// and every record it holds has been delivered.
var ErrStreamGone = errors.New("dynamodb stream is gone")

// resolve finds the stream ARN (DescribeTable when configured with a
// table) and fills s.info from it.
func (s *Source) resolve(ctx context.Context) error {
	arn := s.cfg.StreamARN
	if arn == "" {
		var err error
		if arn, err = s.tableStream(ctx); err != nil {
			return err
		}
	}
	region, table, label, err := parseStreamARN(arn)
	if err != nil {
		return fmt.Errorf("dynamodb source: %w", err)
	}
	s.mu.Lock()
	s.info = streamInfo{arn: arn, region: region, table: table, label: label,
		source: "/cdcbridge/dynamodb/" + region + "/" + table}
	s.mu.Unlock()
	return nil
}

// tableStream returns the ARN of the table's current stream, or an error
// that says how to enable one.
func (s *Source) tableStream(ctx context.Context) (string, error) {
	var out *dynamodb.DescribeTableOutput
	err := s.retrying(ctx, "DescribeTable", func(ctx context.Context) error {
		var err error
		out, err = s.ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.cfg.Table)})
		return err
	})
	var notFound *ddbtypes.ResourceNotFoundException
	switch {
	case errors.As(err, &notFound):
		return "", fmt.Errorf("dynamodb source: table %s not found (check CDCBRIDGE_DYNAMODB_TABLE, the region and the credentials' account): %w", s.cfg.Table, err)
	case err != nil:
		return "", fmt.Errorf("dynamodb source: describing table %s: %w", s.cfg.Table, err)
	}
	spec := out.Table.StreamSpecification
	if spec == nil || !aws.ToBool(spec.StreamEnabled) || aws.ToString(out.Table.LatestStreamArn) == "" {
		return "", fmt.Errorf("dynamodb source: table %s has no stream enabled; enable one with "+
			"`aws dynamodb update-table --table-name %s --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES` "+
			"(NEW_AND_OLD_IMAGES gives events both before and after images)", s.cfg.Table, s.cfg.Table)
	}
	return aws.ToString(out.Table.LatestStreamArn), nil
}

// retrying calls fn until it succeeds, fails with an error that retrying
// cannot fix, or ctx ends. Each attempt has its own timeout.
func (s *Source) retrying(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	bo := newBackoff(200*time.Millisecond, s.cfg.MaxBackoff)
	for {
		err := s.call(ctx, op, fn)
		if err == nil {
			return nil
		}
		if classify(ctx, err) != classRetry {
			return err
		}
		s.health.set("retrying "+op+": "+errorCode(err), err)
		s.heartbeat() // backing off is waiting normally
		if werr := bo.wait(ctx); werr != nil {
			return werr
		}
	}
}

// call runs one attempt of an API call with the request timeout, counting
// its failure by code.
func (s *Source) call(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	err := fn(cctx)
	if err != nil && ctx.Err() == nil {
		s.m.apiErrors.WithLabelValues(op, errorCode(err)).Inc()
	}
	return err
}

// listing is one DescribeStream result, all pages merged.
type listing struct {
	status   types.StreamStatus
	viewType types.StreamViewType
	hashKey  string
	rangeKey string
	shards   []types.Shard
	full     bool // every shard of the stream, not a filtered subset
	asked    time.Time
}

// describe lists the stream's shards, following LastEvaluatedShardId. With
// childrenOf set it asks only for that shard's children (the child-shard
// filter), which is one call instead of a full listing.
func (s *Source) describe(ctx context.Context, childrenOf string) (*listing, error) {
	arn := s.info.arn
	l := &listing{full: childrenOf == "", asked: time.Now()}
	var start *string
	for {
		if err := s.describeLimit.Wait(ctx); err != nil {
			return nil, err
		}
		in := &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), ExclusiveStartShardId: start, Limit: aws.Int32(100)}
		if childrenOf != "" {
			in.ShardFilter = &types.ShardFilter{Type: types.ShardFilterTypeChildShards, ShardId: aws.String(childrenOf)}
		}
		var out *dynamodbstreams.DescribeStreamOutput
		err := s.retrying(ctx, "DescribeStream", func(ctx context.Context) error {
			var err error
			out, err = s.streams.DescribeStream(ctx, in, noSDKRetries)
			return err
		})
		if err != nil {
			return nil, err
		}
		d := out.StreamDescription
		if d == nil {
			return nil, errors.New("DescribeStream returned no StreamDescription")
		}
		l.status, l.viewType = d.StreamStatus, d.StreamViewType
		for _, k := range d.KeySchema {
			switch k.KeyType {
			case types.KeyTypeHash:
				l.hashKey = aws.ToString(k.AttributeName)
			case types.KeyTypeRange:
				l.rangeKey = aws.ToString(k.AttributeName)
			}
		}
		l.shards = append(l.shards, d.Shards...)
		if d.LastEvaluatedShardId == nil || aws.ToString(d.LastEvaluatedShardId) == aws.ToString(start) {
			return l, nil
		}
		start = d.LastEvaluatedShardId
	}
}

// streamGoneError explains a ResourceNotFoundException on the stream.
func (s *Source) streamGoneError(err error) error {
	what := s.info.arn
	if s.cfg.Table != "" {
		what = fmt.Sprintf("%s of table %s", s.info.arn, s.cfg.Table)
	}
	return fmt.Errorf("dynamodb source: stream %s not found: the table was deleted or its stream disabled and expired; "+
		"enable a stream on the table and restart (a new stream is read from CDCBRIDGE_DYNAMODB_START): %w (%w)", what, ErrStreamGone, err)
}
