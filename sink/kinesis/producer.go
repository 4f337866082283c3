package kinesis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

// Producer writes events to one Kinesis stream. Put, Flush, Ready and
// Status are safe for concurrent use; Run is called once.
//
// Each piece of the producer's state has one owner:
//
//   - the intake (intake.go): the in-flight budget, the records Put handed
//     over and the flush epochs, shared by callers and the loop under the
//     intake's mutex;
//   - the loop (loop.go): every record, key, table, shard and batch once
//     taken from the intake, touched only by the goroutine that calls Run;
//   - the senders (sender.go): MaxInFlight goroutines, each holding one
//     batch from the send channel until it is back on the results channel,
//     writing it with the wire writer (wire.go);
//   - the control goroutine (control.go): the stream's summary and shard
//     list, sent to the loop as messages;
//   - the dead-letter writer (dlq.go): its file, fed by the loop's jobs.
type Producer struct {
	cfg   Config
	label string // the stream's name for messages
	log   *slog.Logger

	in     *intake
	fatal  *fatal
	status *statusBox
	ready  atomic.Bool

	loop    *loop
	senders *senders
	control *control
	dlq     *dlqWriter

	running atomic.Bool
}

// New validates cfg and allocates a Producer. reg may be nil (metrics are
// then kept but not registered).
func New(cfg Config, client *kinesis.Client, reg prometheus.Registerer, log *slog.Logger) (*Producer, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("kinesis producer configuration: %w", err)
	}
	if client == nil {
		return nil, errors.New("kinesis producer: nil client")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	label := cfg.streamLabel()
	log = log.With("stream", label)
	m := newMetrics(reg)
	retry := backoff.Backoff{Base: cfg.RetryBase, Max: cfg.RetryMax, Jitter: backoff.Full}
	status := newStatusBox(cfg)
	fatal := newFatal()
	in := newIntake(cfg.MaxInFlightBytes, cfg.MaxInFlightEvents, fatal)

	sendCh := make(chan *batch, cfg.MaxInFlight)
	results := make(chan *batch, cfg.MaxInFlight)
	ctrl := make(chan any, 16)
	refresh := make(chan struct{}, 1)

	name, arn := cfg.streamParams()
	dlq := newDLQWriter(cfg.DLQDir, label, ctrl)
	dlq.limit, dlq.log, dlq.retry = cfg.DLQFailureLimit, log, retry
	return &Producer{
		cfg:    cfg,
		label:  label,
		log:    log,
		in:     in,
		fatal:  fatal,
		status: status,
		loop: &loop{
			cfg: cfg, label: label, log: log, m: m, status: status, client: client,
			in: in, dlq: dlq, sendCh: sendCh, results: results, ctrl: ctrl, refresh: refresh,
			keys:  newKeyTable(cfg.Ordering == OrderingKey),
			ready: readyLists{aggregating: cfg.aggregating()},
			aggs:  aggregates{compress: cfg.CompressAggregates, m: m},
			reqs:  requests{retry: retry, maxInFlight: cfg.MaxInFlight},
		},
		senders: &senders{put: newWirePutter(client, name, arn, cfg.MaxInFlight), timeout: cfg.RequestTimeout, in: sendCh, out: results},
		control: &control{
			cfg: cfg, label: label, log: log, client: client, status: status, retry: retry, out: ctrl, refresh: refresh,
		},
		dlq: dlq,
	}, nil
}

// Put encodes e and queues it for the stream. The producer keeps the
// envelope and e.OnAck, not e, and never writes to e: the caller's event
// (and its row images) can be freed or reused once Put returns. It blocks
// while the in-flight budget (MaxInFlightBytes, MaxInFlightEvents) is used
// up; an event larger than the whole budget is admitted when nothing else
// is in flight. e.Ack is called exactly once, after Kinesis accepted the
// record (or its dead-letter placeholder).
//
// The record is put with e.PartitionKey as the source built it (see
// cdc.PartitionKey), so the envelope and the record carry the same key.
//
// Put returns the producer's fatal error once it has failed, ErrClosed
// once Run has returned, ctx's error when ctx ends while waiting, or an
// error for an event it cannot send as it is: one that does not encode,
// or whose partition key is empty, over 256 bytes or not UTF-8 (the event
// is then not taken).
func (p *Producer) Put(ctx context.Context, e *cdc.Event) error {
	if err := p.fatal.get(); err != nil {
		return err
	}
	r, err := newRecord(e)
	if err != nil {
		return fmt.Errorf("kinesis producer: %w", err)
	}
	return p.in.admit(ctx, r)
}

// Reserve charges n bytes that the caller holds for events it will Put
// later (a snapshot chunk waiting for its place in the stream) to the
// in-flight budget, waiting while the budget is used up; Unreserve returns
// them. Put waits while records and reservations fill the budget
// together.
func (p *Producer) Reserve(ctx context.Context, n int64) error {
	if err := p.fatal.get(); err != nil {
		return err
	}
	return p.in.reserve(ctx, n)
}

// Unreserve returns bytes charged by Reserve.
func (p *Producer) Unreserve(n int64) { p.in.unhold(n) }

// InFlightBudget is the in-flight budget in bytes (MaxInFlightBytes).
func (p *Producer) InFlightBudget() int64 { return p.in.maxBytes }

// Flush waits until every event Put before the call is acknowledged,
// sending without waiting for the linger meanwhile. It returns early with
// the producer's fatal error, ErrClosed, or ctx's error.
func (p *Producer) Flush(ctx context.Context) error { return p.in.flush(ctx) }

// Ready reports whether the stream was described and its shards listed.
func (p *Producer) Ready() bool { return p.ready.Load() }

// Status returns a JSON-marshalable snapshot for /status.
func (p *Producer) Status() any {
	usedB, usedE := p.in.used()
	return p.status.snapshot(p.ready.Load(), usedB, usedE)
}

// Run describes the stream, lists its shards and then sends until ctx
// ends (it returns nil: requests in flight are abandoned, their events not
// acknowledged) or the producer fails (it returns the fatal error, which
// Put and Flush return from then on).
func (p *Producer) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("kinesis producer: Run called twice")
	}
	defer p.in.stop()
	err := p.run(ctx)
	if err != nil && ctx.Err() == nil {
		p.fatal.set(err)
		p.status.setFatal(err)
		p.log.Error("kinesis producer stopped", "err", err)
		return err
	}
	return nil
}

// run starts the stream, then runs the loop on this goroutine and the
// senders, the control goroutine and the dead-letter writer beside it.
func (p *Producer) run(ctx context.Context) error {
	if p.cfg.Oversize == OversizeDLQ {
		if err := p.dlq.check(); err != nil {
			return err
		}
	}
	s, shards, err := p.control.start(ctx)
	if err != nil {
		return err
	}
	if err := p.loop.start(s, shards); err != nil {
		return err
	}
	p.ready.Store(true)

	g, gctx := errgroup.WithContext(ctx)
	loopCtx, cancel := context.WithCancel(gctx)
	defer cancel()
	for range p.cfg.MaxInFlight {
		g.Go(func() error { p.senders.run(loopCtx); return nil })
	}
	g.Go(func() error { return p.dlq.run(loopCtx, p.status) })
	g.Go(func() error { return p.control.run(loopCtx) })
	err = p.loop.run(loopCtx)
	cancel()
	_ = g.Wait()
	return err
}

// fatal is the producer's fatal error: set once, by Run, and read by Put,
// Flush and the intake's waits.
type fatal struct {
	once sync.Once
	done chan struct{} // closed once err is set
	err  error
}

func newFatal() *fatal { return &fatal{done: make(chan struct{})} }

// set records err unless an error was recorded before (the first one wins).
func (f *fatal) set(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.done)
	})
}

// get returns the fatal error, or nil while there is none.
func (f *fatal) get() error {
	select {
	case <-f.done:
		return f.err
	default:
		return nil
	}
}
