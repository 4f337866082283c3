package kinesis

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// loop is the producer's dispatcher: it takes records from the intake,
// queues them per key and table, batches ready keys per shard, hands
// batches to the senders and applies their results. All its state below
// the wiring is owned by the one goroutine that calls Run (start, then
// run); no other goroutine reads or writes it. The others reach the loop
// only through channels: Put and Flush through the intake's wake, the
// senders through results, the control goroutine and the dead-letter
// writer through ctrl.
type loop struct {
	// Wiring, set by New and never changed.
	cfg     Config
	label   string
	log     *slog.Logger
	m       *metrics
	status  *statusBox
	client  *kinesis.Client // its cached credentials are dropped after an expired-token error
	in      *intake
	dlq     *dlqWriter
	sendCh  chan<- *batch
	results <-chan *batch
	ctrl    <-chan any
	refresh chan<- struct{}

	// State, each part with the methods that change it; New sets their
	// settings.
	keys   keyTable   // keys and tables (keys.go)
	stream streamView // the stream as last described and listed (shards.go)
	ready  readyLists // ready lists (ready.go), taken by batching (dispatch.go)
	aggs   aggregates // aggregation and compression of aggregates (aggregate.go)
	reqs   requests   // requests and their outcomes (results.go, retry.go)

	spare []*record // the intake's next queue
	fatal error
	now   time.Time
}

// start takes the stream's first summary and shard list.
func (l *loop) start(s summary, shards []types.Shard) error {
	l.now = time.Now()
	l.applySummary(s)
	if err := l.installShards(shards); err != nil {
		return fmt.Errorf("stream %s: %w", l.label, err)
	}
	l.log.Info("kinesis producer ready", "arn", s.arn, "shards", len(l.stream.smap.shards), "max_record_bytes", l.stream.recordLimit,
		"mode", s.mode, "distribution", s.distribution, "ordering", l.cfg.Ordering, "aggregate", l.cfg.AggregateMode(), "aggregate_compression", l.cfg.AggregateCompression())
	return nil
}

const idleTick = time.Second

// run loops until ctx ends (nil) or the producer fails (the fatal error).
func (l *loop) run(ctx context.Context) error {
	timer := time.NewTimer(idleTick)
	defer timer.Stop()
	for {
		if hb := l.cfg.Heartbeat; hb != nil {
			hb()
		}
		l.now = time.Now()
		l.takeIntake()
		l.fireRetries()
		l.ready.unblock(l.now)
		if l.fatal == nil {
			l.dispatch()
		}
		if l.fatal != nil {
			return l.fatal
		}
		l.publishStatus()
		timer.Reset(l.nextWake().Sub(l.now))
		select {
		case <-ctx.Done():
			return nil
		case <-l.in.wake:
		case b := <-l.results:
			l.now = time.Now()
			l.handleResult(ctx, b)
		case m := <-l.ctrl:
			l.now = time.Now()
			l.handleCtrl(m)
		case <-timer.C:
		}
		if l.fatal != nil {
			return l.fatal
		}
	}
}

// nextWake is when the loop must look again without being told.
func (l *loop) nextWake() time.Time {
	next := l.now.Add(idleTick)
	earlier := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	// Only when a request could go: otherwise a past linger deadline
	// would spin the loop until a slot frees or the gate opens.
	if l.ready.recs > 0 && len(l.ready.active) > 0 && l.reqs.open(l.now) {
		earlier(l.ready.lingerStart.Add(l.cfg.Linger))
	}
	if len(l.reqs.retrying) > 0 {
		earlier(l.reqs.retrying[0].retryAt)
	}
	for _, s := range l.ready.blocked {
		earlier(s.blockedUntil)
	}
	if l.reqs.gateUntil.After(l.now) {
		earlier(l.reqs.gateUntil)
	}
	if next.Before(l.now) {
		next = l.now
	}
	return next
}

// handleCtrl applies a message of the control goroutine or the
// dead-letter writer.
func (l *loop) handleCtrl(m any) {
	switch m := m.(type) {
	case ctrlSummary:
		l.applySummary(m.s)
		if m.s.openShards > 0 && m.s.openShards != len(l.stream.smap.shards) {
			l.requestRefresh()
		}
	case ctrlShards:
		if err := l.installShards(m.shards); err != nil {
			l.status.setTrouble("shards", "shard map unusable: "+err.Error())
			return
		}
	case ctrlFatal:
		l.fatal = m.err
	case dlqDone:
		l.dlqDone(m)
	}
}

// applySummary takes the stream's record limit and settings.
func (l *loop) applySummary(s summary) {
	l.stream.apply(s, &l.cfg)
	l.status.update(func(st *Status) {
		st.StreamARN = s.arn
		st.StreamStatus = string(s.status)
		st.CapacityMode = string(s.mode)
		st.RecordDistribution = string(s.distribution)
		st.MaxRecordBytes = l.stream.recordLimit
	})
}

// installShards replaces the shard map and moves every ready key to its
// shard in the new map; aggregates waiting for the map go out again.
func (l *loop) installShards(list []types.Shard) error {
	old, err := l.stream.install(list)
	if err != nil {
		return err
	}
	m := l.stream.smap
	var oldShards []*shard
	if old != nil {
		oldShards = old.shards
	}
	for _, k := range l.ready.takeAll(oldShards) {
		l.makeReady(k, k.urgent)
	}
	l.stream.unpark(func(k *keyState) { l.makeReady(k, true) })
	l.m.shardRefresh.Inc()
	l.m.shards.Set(float64(len(m.shards)))
	l.status.update(func(st *Status) { st.Shards = len(m.shards) })
	l.status.setTrouble("mismatch", "")
	return nil
}

// requestRefresh asks the control goroutine to list the shards again.
func (l *loop) requestRefresh() {
	select {
	case l.refresh <- struct{}{}:
	default:
	}
}

func (l *loop) publishStatus() {
	l.status.update(func(st *Status) {
		st.InflightRequests = l.reqs.inflight
		st.RetryingKeys = len(l.reqs.retrying)
		st.FailingRequests = l.reqs.failures
		if l.aggs.compressed() {
			st.CompressionRatio = math.Round(l.aggs.ratio()*10) / 10
		}
	})
	if n := len(l.reqs.retrying); n > 0 {
		l.status.setTrouble("retrying", fmt.Sprintf("retrying: %d partition keys wait to resend a failed record", n))
	} else {
		l.status.setTrouble("retrying", "")
	}
}
