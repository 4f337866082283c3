package kinesis

import (
	"context"
	"errors"
	"fmt"
	"time"

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
func (p *Producer) checkSummary(s summary) error {
	switch s.status {
	case types.StreamStatusDeleting:
		return fmt.Errorf("stream %s is being deleted", p.label)
	}
	if s.distribution == types.RecordDistributionStrategyAuto {
		if p.cfg.Ordering == OrderingKey {
			return errAuto(p.label)
		}
		if p.cfg.Aggregate {
			return errAutoAggregate(p.label)
		}
	}
	return nil
}

func (p *Producer) describe(ctx context.Context) (summary, error) {
	name, arn := p.cfg.streamParams()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	out, err := p.client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: name, StreamARN: arn})
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

func (p *Producer) listShards(ctx context.Context) ([]types.Shard, error) {
	name, arn := p.cfg.streamParams()
	in := &kinesis.ListShardsInput{StreamName: name, StreamARN: arn}
	var all []types.Shard
	for {
		actx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
		out, err := p.client.ListShards(actx, in)
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

// wrapStreamErr names the stream and the operation in a fatal error.
func (p *Producer) wrapStreamErr(op string, err error) error {
	switch errorCode(err) {
	case "ResourceNotFoundException":
		return fmt.Errorf("stream %s not found (%s): %w", p.label, op, err)
	case "AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException",
		"InvalidClientTokenId", "MissingAuthenticationToken", "IncompleteSignature", "NotAuthorized":
		return fmt.Errorf("no permission for %s on stream %s (credentials refused or not authorised): %w", op, p.label, err)
	}
	return fmt.Errorf("%s on stream %s: %w", op, p.label, err)
}

// retrying calls f until it succeeds, fails fatally or ctx ends,
// backing off between attempts and reporting the trouble under name.
func (p *Producer) retrying(ctx context.Context, name, op string, f func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			p.status.setTrouble(name, "")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch classify(err) {
		case classFatal, classInvalid:
			return p.wrapStreamErr(op, err)
		case classExpired:
			invalidateCredentials(p.client)
		}
		p.status.setTrouble(name, fmt.Sprintf("%s failing (attempt %d): %v", op, attempt, err))
		p.log.Warn("kinesis call failed; retrying", "op", op, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff(p.cfg.RetryBase, p.cfg.RetryMax, attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// start describes the stream (waiting while it is CREATING) and lists its shards.
func (p *Producer) start(ctx context.Context) (summary, []types.Shard, error) {
	var s summary
	err := p.retrying(ctx, "summary", "DescribeStreamSummary", func(ctx context.Context) error {
		var err error
		s, err = p.describe(ctx)
		if err == nil && s.status == types.StreamStatusCreating {
			return fmt.Errorf("stream %s is still being created", p.label)
		}
		return err
	})
	if err != nil {
		return s, nil, err
	}
	if err := p.checkSummary(s); err != nil {
		return s, nil, err
	}
	var shards []types.Shard
	err = p.retrying(ctx, "shards", "ListShards", func(ctx context.Context) error {
		var err error
		shards, err = p.listShards(ctx)
		return err
	})
	return s, shards, err
}

// ctrlSummary and ctrlShards carry the control goroutine's reads to the run loop.
type ctrlSummary struct{ s summary }
type ctrlShards struct{ shards []types.Shard }
type ctrlFatal struct{ err error }

// minRefreshGap limits shard map reloads triggered by put results.
const minRefreshGap = time.Second

// control re-reads the summary every SummaryInterval and reloads the
// shard map when the run loop asks for it.
func (p *Producer) control(ctx context.Context) error {
	tick := time.NewTicker(p.cfg.SummaryInterval)
	defer tick.Stop()
	var lastList time.Time
	send := func(m any) bool {
		select {
		case p.ctrl <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s, err := p.describe(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				switch classify(err) {
				case classFatal:
					send(ctrlFatal{p.wrapStreamErr("DescribeStreamSummary", err)})
					return nil
				case classExpired:
					invalidateCredentials(p.client)
				}
				p.status.setTrouble("summary", "DescribeStreamSummary failing: "+err.Error())
				continue
			}
			p.status.setTrouble("summary", "")
			if !send(ctrlSummary{s}) {
				return nil
			}
		case <-p.refreshCh:
			if wait := time.Until(lastList.Add(minRefreshGap)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			}
			var shards []types.Shard
			err := p.retrying(ctx, "shards", "ListShards", func(ctx context.Context) error {
				var err error
				shards, err = p.listShards(ctx)
				return err
			})
			lastList = time.Now()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				send(ctrlFatal{err})
				return nil
			}
			if !send(ctrlShards{shards}) {
				return nil
			}
		}
	}
}
