package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// ErrTrimmed is returned by Run (with OnTrimmed "fail") when records
// expired from the stream before they were read.
var ErrTrimmed = errors.New("records expired from the stream before they were read")

// getRecordsLimit is the most records GetRecords returns.
const getRecordsLimit = 1000

// reader reads one shard from its start to its end, in order.
type reader struct {
	s        *Source
	sh       *shard
	emit     cdc.Emit
	start    startSpec
	finished chan<- *shard

	lastRaw, lastPadded string    // the last record read
	skipBefore          time.Time // drop records created before (after a LATEST start)
	bo                  *backoff
}

func (r *reader) run(ctx context.Context) error {
	s, sh := r.s, r.sh
	r.skipBefore = r.start.skipBefore
	r.bo = newBackoff(100*time.Millisecond, s.cfg.MaxBackoff)
	s.log.Info("reading shard", "shard", sh.id, "parent", sh.parent, "after", r.start.after, "latest", r.start.latest)
	iter, err := r.open(ctx, false)
	if err != nil {
		return err
	}
	sh.opened.Store(true)
	idle := time.NewTimer(0)
	<-idle.C
	defer idle.Stop()
	for iter != "" {
		s.heartbeat()
		var out *dynamodbstreams.GetRecordsOutput
		s.m.getRecords.Inc()
		asked := time.Now()
		err := s.call(ctx, "GetRecords", func(ctx context.Context) error {
			var err error
			out, err = s.streams.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{
				ShardIterator: aws.String(iter), Limit: aws.Int32(getRecordsLimit)}, noSDKRetries)
			return err
		})
		if err != nil {
			var next string
			var nerr error
			switch classify(ctx, err) {
			case classCancelled:
				return ctx.Err()
			case classRetry:
				s.health.set("GetRecords retrying: "+errorCode(err), nil)
				if werr := r.bo.wait(ctx); werr != nil {
					return werr
				}
				continue // the same iterator stays valid
			case classExpired:
				// Iterators live 15 minutes; a long wait for the sink
				// outlives one. Continue after the last record read.
				s.log.Debug("shard iterator expired; getting a new one", "shard", sh.id)
				next, nerr = r.open(ctx, true)
			case classTrimmed:
				if terr := s.trimmed(ctx, sh, r.lastPadded, "GetRecords: "+err.Error()); terr != nil {
					return terr
				}
				next, nerr = r.iterator(ctx, types.ShardIteratorTypeTrimHorizon, "")
			case classNotFound:
				return r.gone(ctx, err)
			default:
				return fmt.Errorf("dynamodb source: reading shard %s: %w", sh.id, err)
			}
			if nerr != nil {
				return nerr
			}
			iter = next
			continue
		}
		r.bo.reset()
		if err := r.deliver(ctx, out.Records); err != nil {
			return err
		}
		next := aws.ToString(out.NextShardIterator)
		if next == "" {
			// A null next iterator, and only that, means the shard is
			// closed and read to its end.
			return r.finish(ctx, ckptData{LastSequence: r.lastPadded})
		}
		iter = next
		if len(out.Records) < getRecordsLimit {
			// The answer reached the shard's end as it was when asked
			// (evidence for loads, see snapgate.go).
			sh.tipAt.Store(asked.UnixNano())
		}
		if len(out.Records) == 0 {
			// Nothing new (an empty page does not end a shard): poll again
			// after the idle interval.
			sh.caughtUp.Store(true)
			idle.Reset(s.idleInterval())
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-idle.C:
			}
		}
	}
	return nil
}

// open returns an iterator where this reader stands: after the last record
// read, else at the shard's start. A renewal (expired iterator) of a shard
// started at LATEST that read nothing yet goes to TRIM_HORIZON, dropping
// records created well before the start, so that nothing that came since
// is skipped.
func (r *reader) open(ctx context.Context, renew bool) (string, error) {
	switch {
	case r.lastRaw != "":
		return r.iterator(ctx, types.ShardIteratorTypeAfterSequenceNumber, r.lastRaw)
	case r.start.after != "":
		return r.iterator(ctx, types.ShardIteratorTypeAfterSequenceNumber, r.start.after)
	case r.start.latest && !renew:
		return r.iterator(ctx, types.ShardIteratorTypeLatest, "")
	case r.start.latest:
		r.skipBefore = r.start.latestAt.Add(-latestMargin)
	}
	return r.iterator(ctx, types.ShardIteratorTypeTrimHorizon, "")
}

// iterator calls GetShardIterator, retrying what can be retried. Records
// that expired after the requested position are handled by OnTrimmed
// (skip: the iterator starts at TRIM_HORIZON).
func (r *reader) iterator(ctx context.Context, typ types.ShardIteratorType, after string) (string, error) {
	s, sh := r.s, r.sh
	in := &dynamodbstreams.GetShardIteratorInput{
		StreamArn: aws.String(s.info.arn), ShardId: aws.String(sh.id), ShardIteratorType: typ,
	}
	if after != "" {
		in.SequenceNumber = aws.String(after)
	}
	var out *dynamodbstreams.GetShardIteratorOutput
	err := s.retrying(ctx, "GetShardIterator", func(ctx context.Context) error {
		var err error
		out, err = s.streams.GetShardIterator(ctx, in, noSDKRetries)
		return err
	})
	if err == nil {
		it := aws.ToString(out.ShardIterator)
		if it == "" {
			return "", fmt.Errorf("dynamodb source: GetShardIterator of shard %s returned no iterator", sh.id)
		}
		return it, nil
	}
	switch classify(ctx, err) {
	case classCancelled:
		return "", ctx.Err()
	case classTrimmed:
		if typ == types.ShardIteratorTypeTrimHorizon {
			break
		}
		pos := r.lastPadded
		if pos == "" && after != "" {
			pos, _ = cdc.PadSequence(after)
		}
		if err := s.trimmed(ctx, sh, pos, "GetShardIterator: "+err.Error()); err != nil {
			return "", err
		}
		return r.iterator(ctx, types.ShardIteratorTypeTrimHorizon, "")
	case classNotFound:
		return "", r.gone(ctx, err)
	}
	return "", fmt.Errorf("dynamodb source: getting an iterator for shard %s (%s %s): %w", sh.id, typ, after, err)
}

// deliver emits the records of one page, in order, each as its own span of
// the shard's tracker.
func (r *reader) deliver(ctx context.Context, recs []types.Record) error {
	if len(recs) == 0 {
		return nil
	}
	s, sh := r.s, r.sh
	s.mu.Lock()
	info := s.info
	s.mu.Unlock()
	if t := recs[len(recs)-1].Dynamodb; t != nil && t.ApproximateCreationDateTime != nil {
		sh.newest.Store(t.ApproximateCreationDateTime.UnixNano())
	}
	sh.caughtUp.Store(false)
	for i := range recs {
		rec, err := info.convert(sh.id, &recs[i])
		if err != nil {
			return fmt.Errorf("dynamodb source: shard %s: %w", sh.id, err)
		}
		if rec.padded <= r.lastPadded {
			continue // already read (a renewed iterator may repeat)
		}
		span := sh.tracker.Open(rec.created)
		if !r.skipBefore.IsZero() && !rec.created.IsZero() && rec.created.Before(r.skipBefore) {
			span.Seal(rec.padded) // not wanted, but the watermark passes it
			r.lastRaw, r.lastPadded = rec.event.Info.SequenceNumber, rec.padded
			continue
		}
		span.Add()
		span.Seal(rec.padded)
		rec.event.OnAck = func() {
			span.Done()
			sh.acked()
		}
		s.recent.note(rec.event.PartitionKey)
		if err := r.emit(ctx, rec.event); err != nil {
			// Not taken: this reader (resumed after a lapsed lease) or
			// the shard's next owner reads it again.
			span.Withdraw()
			return fmt.Errorf("dynamodb source: emitting %s of shard %s: %w", rec.event.ID, sh.id, err)
		}
		r.lastRaw, r.lastPadded = rec.event.Info.SequenceNumber, rec.padded
		s.m.received[rec.event.Op].Inc()
		if !rec.created.IsZero() {
			sh.emittedCreated.Store(rec.created.UnixNano())
		}
	}
	last := r.lastPadded
	sh.lastRead.Store(&last)
	return nil
}

// finish waits until every event of the shard was acknowledged, saves the
// finish checkpoint and hands the shard to the coordinator, which then
// releases its children.
func (r *reader) finish(ctx context.Context, d ckptData) error {
	s, sh := r.s, r.sh
	sh.caughtUp.Store(true)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for !sh.tracker.Idle() {
		s.heartbeat()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sh.ackSignal:
		case <-t.C:
		}
	}
	if err := s.saveFinished(ctx, sh, d); err != nil {
		return err
	}
	s.log.Info("shard finished", "shard", sh.id, "last_sequence", d.LastSequence, "trimmed", d.Trimmed)
	select {
	case r.finished <- sh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gone handles a shard that no longer exists. When the whole stream is
// gone that is fatal; a shard that left the stream before it was read to
// its end lost its remaining records to the retention period.
func (r *reader) gone(ctx context.Context, cause error) error {
	s := r.s
	err := s.retrying(ctx, "DescribeStream", func(ctx context.Context) error {
		if err := s.describeLimit.Wait(ctx); err != nil {
			return err
		}
		_, err := s.streams.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{
			StreamArn: aws.String(s.info.arn), Limit: aws.Int32(1)}, noSDKRetries)
		return err
	})
	switch {
	case err == nil:
	case classify(ctx, err) == classNotFound:
		return s.streamGoneError(err)
	default:
		return fmt.Errorf("dynamodb source: shard %s not found (%v), and checking the stream failed: %w", r.sh.id, cause, err)
	}
	if err := s.trimmed(ctx, r.sh, r.lastPadded, "the shard left the stream before it was read to its end"); err != nil {
		return err
	}
	return r.finish(ctx, ckptData{LastSequence: r.lastPadded, Trimmed: true})
}

// trimmed reports records that expired before they were read: an error
// log, the trimmed metric, and by OnTrimmed an error (fail) or nil (skip:
// the caller continues from the oldest record available).
func (s *Source) trimmed(ctx context.Context, sh *shard, after, detail string) error {
	s.m.trimmed.Inc()
	if after == "" {
		sh.saveMu.Lock()
		after = sh.saved
		sh.saveMu.Unlock()
	}
	if after == "" {
		after = "(the shard's start)"
	}
	s.log.Error("DATA LOSS: records expired from the DynamoDB stream (24-hour retention) before they were read",
		"shard", sh.id, "after", after, "detail", detail, "on_trimmed", s.cfg.OnTrimmed)
	if s.cfg.OnTrimmed == OnTrimmedSkip {
		s.health.set("records expired before they were read (skipped)", nil)
		return nil
	}
	return fmt.Errorf("dynamodb source: shard %s: records after %s expired before they were read (%s); "+
		"set CDCBRIDGE_DYNAMODB_ON_TRIMMED=skip to continue from the oldest record still in the stream, accepting the gap: %w",
		sh.id, after, detail, ErrTrimmed)
}

// logViewType says what the stream's view type means for the events.
func (s *Source) logViewType() {
	switch types.StreamViewType(s.info.viewType) {
	case types.StreamViewTypeKeysOnly:
		s.log.Warn("the stream's view type is KEYS_ONLY: events carry the item's key only (before and after are null); use NEW_AND_OLD_IMAGES for complete events")
	case types.StreamViewTypeNewImage:
		s.log.Info("the stream's view type is NEW_IMAGE: events have no before image")
	case types.StreamViewTypeOldImage:
		s.log.Info("the stream's view type is OLD_IMAGE: events have no after image")
	}
}
