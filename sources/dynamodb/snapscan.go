package dynamodb

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// page is one Scan answer on its way.
type page struct {
	items     []map[string]ddbtypes.AttributeValue
	last      map[string]ddbtypes.AttributeValue
	requested time.Time // when the Scan request was sent
	answered  time.Time
	emitted   int
	dropped   int
	pending   atomic.Int64 // items not yet accepted, +1 until all were emitted
	done      chan struct{}
	token     *byte // its entry in loader.active
}

func (p *page) acked() {
	if p.pending.Add(-1) == 0 {
		close(p.done)
	}
}

// prefetchPages is how many pages a segment keeps read ahead, besides the
// one it reads and the one held: holds overlap, so a segment is not slowed
// to one page per hold.
const prefetchPages = 1

// segment reads one segment from its last delivered page to its end.
func (l *loader) segment(ctx context.Context, info streamInfo, job *loadJob, idx int, b *budget) error {
	s := l.s
	l.mu.Lock()
	sg := job.Segments[idx]
	from, err := decodeKey(sg.LastKey)
	sg.State = loadReading
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("dynamodb source: snapshot %s segment %d: %w", job.ID, idx, err)
	}
	l.inProgress.Add(1)
	defer l.inProgress.Add(-1)
	sc := &scanner{l: l, job: job, seg: idx, total: len(job.Segments), b: b, est: 1}

	sctx, stop := context.WithCancel(ctx)
	pages := make(chan *page, prefetchPages)
	var scanErr error
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer close(pages)
		for !l.cancelled(job) {
			// Registered before the request: keys the stream notes from
			// now on are kept until the page is delivered.
			tok := new(byte)
			l.active.Store(tok, time.Now())
			p, err := sc.scan(sctx, from)
			if err != nil {
				l.active.Delete(tok)
				// A scan stopped by endScan (a job cancelled while its
				// page waits for the budget) or by the source's end did not
				// fail: only the others fail the segment.
				if sctx.Err() == nil {
					scanErr = err
				}
				return
			}
			p.token = tok
			select {
			case pages <- p:
			case <-sctx.Done():
				l.active.Delete(tok)
				return
			}
			if p.last == nil {
				return
			}
			from = p.last
		}
	}()
	// endScan stops the reading ahead; scanErr may be read after it.
	endScan := func() {
		stop()
		for p := range pages {
			l.active.Delete(p.token)
		}
		<-scanned
	}
	defer endScan()

	var prev *page
	finished := false
	for p := range pages {
		// Hold the page until the stream has passed the time it was read.
		if err := waitStream(ctx, func() bool { return s.streamPassed(p.answered) }); err != nil {
			l.active.Delete(p.token)
			return err
		}
		if prev != nil {
			if err := l.commit(ctx, job, sg, prev); err != nil {
				l.active.Delete(p.token)
				return err
			}
			prev = nil
		}
		if l.cancelled(job) {
			l.active.Delete(p.token)
			break
		}
		err := l.deliver(ctx, info, job, p)
		l.active.Delete(p.token)
		if err != nil {
			return err
		}
		prev = p
		if p.last == nil {
			finished = true
		}
	}
	endScan()
	if scanErr != nil && !finished && ctx.Err() == nil {
		return scanErr
	}
	if prev != nil {
		if err := l.commit(ctx, job, sg, prev); err != nil {
			return err
		}
	}
	if finished {
		l.update(func() { sg.State = loadDone })
		return l.saveRetrying(ctx)
	}
	return ctx.Err()
}

// deliver emits a held page's items, dropping those whose key the stream
// emitted since the page was requested.
func (l *loader) deliver(ctx context.Context, info streamInfo, job *loadJob, p *page) error {
	s := l.s
	p.done = make(chan struct{})
	p.pending.Store(1)
	seq := readSequence(s.streamPosition())
	for _, item := range p.items {
		e, err := info.readEvent(job.ID, seq, item, p.answered)
		if err != nil {
			return fmt.Errorf("dynamodb source: snapshot %s: %w", job.ID, err)
		}
		e.OnAck = p.acked
		s.recent.mu.Lock()
		if s.recent.seenSince(e.PartitionKey, p.requested) {
			s.recent.mu.Unlock()
			p.dropped++
			s.m.snapDropped.Inc()
			continue
		}
		p.pending.Add(1)
		err = l.emit(ctx, e)
		s.recent.mu.Unlock()
		if err != nil {
			p.pending.Add(-1)
			return fmt.Errorf("dynamodb source: snapshot %s: emitting %s: %w", job.ID, e.ID, err)
		}
		p.emitted++
		s.m.received[cdc.OpRead].Inc()
	}
	p.items = nil
	p.acked() // all emitted
	return nil
}

// commit waits until every item of p was accepted and saves the segment's
// progress after it.
func (l *loader) commit(ctx context.Context, job *loadJob, sg *loadSegment, p *page) error {
	for {
		select {
		case <-p.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
			l.s.heartbeat()
			continue
		}
		break
	}
	last, err := encodeKey(p.last)
	if err != nil {
		return fmt.Errorf("dynamodb source: snapshot %s: %w", job.ID, err)
	}
	l.update(func() {
		sg.LastKey = last
		sg.Items += int64(p.emitted)
		sg.Dropped += int64(p.dropped)
		sg.Pages++
		sg.LargestPage = max(sg.LargestPage, p.emitted+p.dropped)
	})
	l.s.m.snapItems.Add(float64(p.emitted))
	l.s.m.snapPages.Inc()
	return l.saveRetrying(ctx)
}

// scanner reads the pages of one segment within the budget.
type scanner struct {
	l          *loader
	job        *loadJob
	seg, total int
	b          *budget
	est        float64 // the last page's cost
	limit      int32   // items per page (0: DynamoDB's 1 MB pages)
}

// scanError is a Scan refused for a reason retrying cannot cure (access
// denied, the table gone, a bad request): the load fails, the stream goes
// on.
type scanError struct{ err error }

func (e *scanError) Error() string { return e.err.Error() }
func (e *scanError) Unwrap() error { return e.err }

// minPageItems is the first page's size under a budget, before the cost
// of an item is known.
const minPageItems = 25

func (sc *scanner) scan(ctx context.Context, from map[string]ddbtypes.AttributeValue) (*page, error) {
	s := sc.l.s
	target := sc.b.pageTarget(sc.total)
	if target > 0 && sc.limit == 0 {
		sc.limit = minPageItems
	}
	bo := newBackoff(100*time.Millisecond, s.cfg.MaxBackoff)
	for {
		in := &dynamodb.ScanInput{
			TableName:              aws.String(sc.job.Table),
			ConsistentRead:         aws.Bool(true),
			Segment:                aws.Int32(int32(sc.seg)),
			TotalSegments:          aws.Int32(int32(sc.total)),
			ExclusiveStartKey:      from,
			ReturnConsumedCapacity: ddbtypes.ReturnConsumedCapacityTotal,
		}
		if sc.limit > 0 {
			in.Limit = aws.Int32(sc.limit)
		}
		est := sc.est
		if err := sc.b.take(ctx, est); err != nil {
			return nil, err
		}
		requested := time.Now()
		var out *dynamodb.ScanOutput
		err := s.call(ctx, "Scan", func(ctx context.Context) error {
			var err error
			out, err = s.ddb.Scan(ctx, in, func(o *dynamodb.Options) { o.Retryer = aws.NopRetryer{} })
			return err
		})
		if err != nil {
			code := errorCode(err)
			switch {
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case code == "ProvisionedThroughputExceededException" || code == "ThrottlingException" || code == "RequestLimitExceeded":
				sc.b.throttled()
				s.m.snapThrottled.Inc()
				s.health.set("snapshot throttled by the table (backing off)", nil)
			case classify(ctx, err) == classRetry:
				sc.b.settle(est, 0)
				s.health.set("snapshot Scan retrying: "+code, nil)
			default:
				return nil, &scanError{fmt.Errorf("scanning segment %d of %s: %w", sc.seg, sc.job.Table, err)}
			}
			s.heartbeat()
			if err := bo.wait(ctx); err != nil {
				return nil, err
			}
			continue
		}
		cost := est
		if out.ConsumedCapacity != nil && out.ConsumedCapacity.CapacityUnits != nil {
			cost = *out.ConsumedCapacity.CapacityUnits
		}
		sc.b.settle(est, cost)
		sc.est = cost
		s.m.snapRCU.Add(cost)
		sc.l.update(func() { sc.job.ConsumedRCU += cost })
		if target > 0 && len(out.Items) > 0 && cost > 0 {
			// Cost is rounded up per page (4 KB units), so a page at or
			// under its target grows by at least a quarter.
			f := target / cost
			if cost <= target {
				f = min(2, max(1.25, f))
			}
			sc.limit = int32(math.Max(1, math.Min(float64(len(out.Items))*f, 10000)))
		}
		return &page{items: out.Items, last: out.LastEvaluatedKey, requested: requested, answered: time.Now()}, nil
	}
}
