package dynamodb

import (
	"context"
	"math"
	"sync"
	"time"
)

// budget is the read capacity a load may use: a token bucket of RCU that
// is paid from what DynamoDB reports as consumed (ReturnConsumedCapacity),
// not from guesses. A request takes its estimate (the last page's cost)
// before it is sent and settles the difference when the answer says what
// it cost, so the bucket may go into debt by one page's misestimate; later
// requests wait until the debt is paid.
//
// Over any window of W seconds the load consumes at most rate*W, plus the
// bucket's depth (half a second of budget: what an idle bucket saved),
// plus the pages in flight beyond their estimate. Pages are sized so that
// one per segment costs about a second of the budget (see pageTarget),
// which keeps a 60-second window within 105% of the budget.
//
// A throttled request (ProvisionedThroughputExceededException) halves the
// rate; each page read without throttling raises it by a twentieth of the
// configured rate, back up to that rate.
type budget struct {
	limit float64 // configured RCU/s; 0: no budget

	mu     sync.Mutex
	rate   float64 // current RCU/s (lowered after throttling)
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newBudget(limit float64) *budget {
	b := &budget{limit: limit, rate: limit, now: time.Now}
	b.last = b.now()
	return b
}

// depth is how many tokens an idle bucket holds.
func (b *budget) depth() float64 { return math.Max(b.rate/2, 1) }

func (b *budget) refill(now time.Time) {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(b.tokens+el*b.rate, b.depth())
	}
	b.last = now
}

// take waits until est tokens are available (at most the bucket's depth)
// and takes them.
func (b *budget) take(ctx context.Context, est float64) error {
	if b.limit <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(0)
	<-t.C
	defer t.Stop()
	for {
		b.mu.Lock()
		b.refill(b.now())
		need := math.Min(math.Max(est, 0), b.depth())
		if b.tokens >= need {
			b.tokens -= need
			b.mu.Unlock()
			return nil
		}
		wait := time.Duration((need - b.tokens) / b.rate * float64(time.Second))
		b.mu.Unlock()
		t.Reset(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// settle pays the difference between a request's estimate and its cost.
func (b *budget) settle(est, actual float64) {
	if b.limit <= 0 {
		return
	}
	b.mu.Lock()
	b.refill(b.now())
	b.tokens += math.Min(math.Max(est, 0), b.depth()) - actual
	b.rate = math.Min(b.limit, b.rate+b.limit/20)
	b.mu.Unlock()
}

// throttled lowers the rate after DynamoDB refused a request for capacity.
// The request's estimate is not given back.
func (b *budget) throttled() {
	if b.limit <= 0 {
		return
	}
	b.mu.Lock()
	b.refill(b.now())
	b.rate = math.Max(b.rate/2, b.limit/64)
	b.tokens = math.Min(b.tokens, 0)
	b.mu.Unlock()
}

// pageTarget is the cost one page should have: a second of the budget
// shared by the segments, between 1 RCU and 256 (a full 1 MB page of
// strongly consistent reads). 0 without a budget: no limit. A window of a
// minute then holds at most the budget's 60 seconds, the bucket's half
// second, and one page per segment beyond it: within 105%.
func (b *budget) pageTarget(segments int) float64 {
	if b.limit <= 0 {
		return 0
	}
	return math.Min(math.Max(b.limit/float64(max(segments, 1)), 1), 256)
}
