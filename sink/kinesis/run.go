package kinesis

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"golang.org/x/sync/errgroup"

	"github.com/cdcbridge/cdcbridge/sink/kinesis/kpl"
)

// loopState is owned by the run loop goroutine.
type loopState struct {
	keys     map[string]*keyState
	tables   map[string]*tableState
	freeKeys []*keyState

	smap        *shardMap
	lim         limits
	sum         summary
	recordLimit int // the stream's limit, at most MaxRequestBytes
	aggMax      int

	active      []*shard // shards with ready keys and tokens
	cursor      int
	blocked     []*shard // shards with ready keys waiting for tokens
	readyRecs   int
	readyBytes  int64
	lingerStart time.Time
	urgent      bool

	retry       retryHeap
	inflight    int
	gateUntil   time.Time
	reqFailures int
	lastWarn    time.Time
	pending     []*batch // halves of a rejected batch, sent first
	awaitMap    []*keyState
	mapAt       time.Time // when the current shard map was installed

	agg      kpl.Aggregator
	emptyAgg kpl.Aggregator // never added to: sizes a lone record
	acked    []*record
	spare    []*record
	fatal    error
	now      time.Time
}

// Run describes the stream, lists its shards and then sends until ctx
// ends (it returns nil: requests in flight are abandoned, their events not
// acknowledged) or the producer fails (it returns the fatal error, which
// Put and Flush return from then on).
func (p *Producer) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("kinesis producer: Run called twice")
	}
	defer p.stop()
	err := p.run(ctx)
	if err != nil && ctx.Err() == nil {
		p.fail(err)
		p.log.Error("kinesis producer stopped", "err", err)
		return err
	}
	return nil
}

func (p *Producer) stop() {
	p.mu.Lock()
	p.stopped = true
	if p.space != nil {
		close(p.space)
		p.space = nil
	}
	p.mu.Unlock()
	close(p.done)
}

func (p *Producer) run(ctx context.Context) error {
	if p.cfg.Oversize == OversizeDLQ {
		if err := p.dlq.check(); err != nil {
			return err
		}
	}
	s, shards, err := p.start(ctx)
	if err != nil {
		return err
	}
	l := &p.loop
	l.keys = map[string]*keyState{}
	l.tables = map[string]*tableState{}
	l.now = time.Now()
	p.applySummary(s)
	if err := p.installShards(shards); err != nil {
		return fmt.Errorf("stream %s: %w", p.label, err)
	}
	p.ready.Store(true)
	p.log.Info("kinesis producer ready", "arn", s.arn, "shards", len(l.smap.shards), "max_record_bytes", l.recordLimit,
		"mode", s.mode, "distribution", s.distribution, "ordering", p.cfg.Ordering, "aggregate", p.cfg.Aggregate)

	g, gctx := errgroup.WithContext(ctx)
	loopCtx, cancel := context.WithCancel(gctx)
	defer cancel()
	for range p.cfg.MaxInFlight {
		g.Go(func() error { p.worker(loopCtx); return nil })
	}
	g.Go(func() error { return p.dlq.run(loopCtx, p.cfg.RetryBase, p.cfg.RetryMax, &p.status) })
	g.Go(func() error { return p.control(loopCtx) })
	err = p.mainLoop(loopCtx)
	cancel()
	_ = g.Wait()
	return err
}

// worker sends batches, one request at a time.
func (p *Producer) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-p.sendCh:
			actx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
			b.err = p.putter.put(actx, b)
			cancel()
			b.dur = time.Since(b.sentAt)
			p.results <- b // capacity MaxInFlight: never blocks
		}
	}
}

const idleTick = time.Second

func (p *Producer) mainLoop(ctx context.Context) error {
	l := &p.loop
	timer := time.NewTimer(idleTick)
	defer timer.Stop()
	for {
		if hb := p.cfg.Heartbeat; hb != nil {
			hb()
		}
		l.now = time.Now()
		p.takeIntake()
		p.fireRetries()
		p.unblockShards()
		if l.fatal == nil {
			p.dispatch()
		}
		if l.fatal != nil {
			return l.fatal
		}
		p.publishStatus()
		timer.Reset(p.nextWake().Sub(l.now))
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case b := <-p.results:
			l.now = time.Now()
			p.handleResult(ctx, b)
		case m := <-p.ctrl:
			l.now = time.Now()
			p.handleCtrl(m)
		case <-timer.C:
		}
		if l.fatal != nil {
			return l.fatal
		}
	}
}

// nextWake is when the loop must look again without being told.
func (p *Producer) nextWake() time.Time {
	l := &p.loop
	next := l.now.Add(idleTick)
	earlier := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	// Only when a request could go: otherwise a past linger deadline
	// would spin the loop until a slot frees or the gate opens.
	limit := p.cfg.MaxInFlight
	if l.reqFailures > 0 {
		limit = 1
	}
	if l.readyRecs > 0 && len(l.active) > 0 && l.inflight < limit && !l.gateUntil.After(l.now) {
		earlier(l.lingerStart.Add(p.cfg.Linger))
	}
	if len(l.retry) > 0 {
		earlier(l.retry[0].retryAt)
	}
	for _, s := range l.blocked {
		earlier(s.blockedUntil)
	}
	if l.gateUntil.After(l.now) {
		earlier(l.gateUntil)
	}
	if next.Before(l.now) {
		next = l.now
	}
	return next
}

func (p *Producer) handleCtrl(m any) {
	l := &p.loop
	switch m := m.(type) {
	case ctrlSummary:
		if err := p.checkSummary(m.s); err != nil {
			l.fatal = err
			return
		}
		p.applySummary(m.s)
		if m.s.openShards > 0 && m.s.openShards != len(l.smap.shards) {
			p.requestRefresh()
		}
	case ctrlShards:
		if err := p.installShards(m.shards); err != nil {
			p.status.setTrouble("shards", "shard map unusable: "+err.Error())
			return
		}
	case ctrlFatal:
		l.fatal = m.err
	case dlqDone:
		p.dlqDone(m)
	}
}

// applySummary takes the stream's record limit and settings.
func (p *Producer) applySummary(s summary) {
	l := &p.loop
	l.sum = s
	l.recordLimit = min(s.maxRecordKiB<<10, p.cfg.MaxRequestBytes)
	l.aggMax = l.recordLimit
	if p.cfg.AggregateMaxBytes > 0 {
		l.aggMax = min(p.cfg.AggregateMaxBytes, l.recordLimit)
	}
	l.lim = newLimits(p.cfg.ShardHeadroom, l.recordLimit)
	if l.smap != nil {
		l.smap.setLimits(l.lim)
	}
	p.status.update(func(st *Status) {
		st.StreamARN = s.arn
		st.StreamStatus = string(s.status)
		st.CapacityMode = string(s.mode)
		st.RecordDistribution = string(s.distribution)
		st.MaxRecordBytes = l.recordLimit
	})
}

// installShards replaces the shard map and moves every ready key to its
// shard in the new map; aggregates waiting for the map go out again.
func (p *Producer) installShards(list []types.Shard) error {
	l := &p.loop
	var ver uint64 = 1
	if l.smap != nil {
		ver = l.smap.version + 1
	}
	m, err := newShardMap(list, l.smap, ver, l.lim)
	if err != nil {
		return err
	}
	var ready []*keyState
	if l.smap != nil {
		for _, s := range l.smap.shards {
			for k := s.readyHead; k != nil; {
				next := k.nextReady
				k.nextReady = nil
				k.ready = false
				ready = append(ready, k)
				k = next
			}
			s.readyHead, s.readyTail, s.readyN = nil, nil, 0
		}
	}
	l.smap = m
	l.mapAt = l.now
	l.active = l.active[:0]
	l.blocked = l.blocked[:0]
	l.readyRecs, l.readyBytes = 0, 0
	for _, k := range ready {
		p.makeReady(k, k.urgent)
	}
	for _, k := range l.awaitMap {
		k.parked = false
		p.makeReady(k, true)
	}
	clear(l.awaitMap)
	l.awaitMap = l.awaitMap[:0]
	p.m.shardRefresh.Inc()
	p.m.shards.Set(float64(len(m.shards)))
	p.status.update(func(st *Status) { st.Shards = len(m.shards) })
	p.status.setTrouble("mismatch", "")
	return nil
}

func (p *Producer) requestRefresh() {
	select {
	case p.refreshCh <- struct{}{}:
	default:
	}
}

func (p *Producer) publishStatus() {
	l := &p.loop
	p.status.update(func(st *Status) {
		st.InflightRequests = l.inflight
		st.RetryingKeys = len(l.retry)
		st.FailingRequests = l.reqFailures
	})
	if len(l.retry) > 0 {
		p.status.setTrouble("retrying", fmt.Sprintf("retrying: %d partition keys wait to resend a failed record", len(l.retry)))
	} else {
		p.status.setTrouble("retrying", "")
	}
}

// retryHeap orders keys waiting for their backoff by retryAt.
type retryHeap []*keyState

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].retryAt.Before(h[j].retryAt) }
func (h retryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *retryHeap) Push(x any) {
	k := x.(*keyState)
	k.heapIdx = len(*h)
	*h = append(*h, k)
}
func (h *retryHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return k
}

// scheduleRetry puts k in the retry heap until its backoff ends.
func (p *Producer) scheduleRetry(k *keyState, attempts int) {
	l := &p.loop
	k.retryAt = l.now.Add(backoff(p.cfg.RetryBase, p.cfg.RetryMax, attempts))
	k.inRetry = true
	heap.Push(&l.retry, k)
}

func (p *Producer) fireRetries() {
	l := &p.loop
	for len(l.retry) > 0 && !l.retry[0].retryAt.After(l.now) {
		k := heap.Pop(&l.retry).(*keyState)
		k.inRetry = false
		p.makeReady(k, true)
	}
}
