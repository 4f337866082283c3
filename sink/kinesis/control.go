package kinesis

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

// control reads the stream's summary and shard list (stream.go): once at
// start, on Run's goroutine, then in its own goroutine, which re-reads the
// summary every SummaryInterval, lists the shards again when the loop asks
// (refresh), and sends what it reads to the loop (out). It keeps no state
// the loop reads.
type control struct {
	cfg     Config
	label   string
	log     *slog.Logger
	client  *kinesis.Client
	status  *statusBox
	retry   backoff.Backoff // copied per call: each call counts its own attempts
	out     chan<- any
	refresh <-chan struct{}
}

// ctrlSummary, ctrlShards and ctrlFatal carry the control goroutine's
// reads to the loop.
type ctrlSummary struct{ s summary }
type ctrlShards struct{ shards []types.Shard }
type ctrlFatal struct{ err error }

// minRefreshGap limits shard map reloads triggered by put results.
const minRefreshGap = time.Second

// start describes the stream (waiting while it is CREATING) and lists its shards.
func (c *control) start(ctx context.Context) (summary, []types.Shard, error) {
	var s summary
	err := c.retrying(ctx, "summary", "DescribeStreamSummary", func(ctx context.Context) error {
		var err error
		s, err = c.describe(ctx)
		if err == nil && s.status == types.StreamStatusCreating {
			return fmt.Errorf("stream %s is still being created", c.label)
		}
		return err
	})
	if err != nil {
		return s, nil, err
	}
	if err := c.checkSummary(s); err != nil {
		return s, nil, err
	}
	shards, err := c.listShardsRetrying(ctx)
	return s, shards, err
}

// run re-reads the summary every SummaryInterval and reloads the shard
// map when the loop asks for it, until ctx ends or a fatal error has been
// sent to the loop.
func (c *control) run(ctx context.Context) error {
	tick := time.NewTicker(c.cfg.SummaryInterval)
	defer tick.Stop()
	var lastList time.Time
	send := func(m any) bool {
		select {
		case c.out <- m:
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
			s, err := c.describe(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				switch classify(err) {
				case classFatal:
					send(ctrlFatal{streamError(c.label, "DescribeStreamSummary", err)})
					return nil
				case classExpired:
					invalidateCredentials(c.client)
				}
				c.status.setTrouble("summary", "DescribeStreamSummary failing: "+err.Error())
				continue
			}
			c.status.setTrouble("summary", "")
			if err := c.checkSummary(s); err != nil {
				send(ctrlFatal{err})
				return nil
			}
			if !send(ctrlSummary{s}) {
				return nil
			}
		case <-c.refresh:
			if wait := time.Until(lastList.Add(minRefreshGap)); wait > 0 {
				if backoff.Wait(ctx, wait) != nil {
					return nil
				}
			}
			shards, err := c.listShardsRetrying(ctx)
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

func (c *control) listShardsRetrying(ctx context.Context) ([]types.Shard, error) {
	var shards []types.Shard
	err := c.retrying(ctx, "shards", "ListShards", func(ctx context.Context) error {
		var err error
		shards, err = c.listShards(ctx)
		return err
	})
	return shards, err
}

// retrying calls f until it succeeds, fails fatally or ctx ends,
// backing off between attempts and reporting the trouble under name.
func (c *control) retrying(ctx context.Context, name, op string, f func(context.Context) error) error {
	bo := c.retry
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			c.status.setTrouble(name, "")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch classify(err) {
		case classFatal, classInvalid:
			return streamError(c.label, op, err)
		case classExpired:
			invalidateCredentials(c.client)
		}
		c.status.setTrouble(name, fmt.Sprintf("%s failing (attempt %d): %v", op, attempt, err))
		c.log.Warn("kinesis call failed; retrying", "op", op, "attempt", attempt, "err", err)
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
}
