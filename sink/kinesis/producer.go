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

	"github.com/cdcbridge/cdcbridge/cdc"
)

// Producer writes events to one Kinesis stream. Put, Flush, Ready and
// Status are safe for concurrent use; Run is called once.
type Producer struct {
	cfg    Config
	client *kinesis.Client
	putter putter
	log    *slog.Logger
	m      *metrics
	label  string // stream name for messages

	// Budget and intake, guarded by mu.
	mu         sync.Mutex
	usedBytes  int64
	usedEvents int
	intake     []*record
	space      chan struct{} // closed when budget is released; nil when nobody waits
	epoch      uint64        // flush epoch of new events
	epochN     int           // unacked events of the current epoch
	older      map[uint64]int
	flushed    chan struct{} // closed when an older epoch completes
	stopped    bool

	wake     chan struct{} // intake became non-empty
	flushers atomic.Int32  // Flush calls waiting: send without linger

	failOnce sync.Once
	failed   chan struct{}
	failErr  error
	done     chan struct{} // closed when Run returns

	running atomic.Bool
	ready   atomic.Bool

	sendCh    chan *batch
	results   chan *batch
	ctrl      chan any
	refreshCh chan struct{}
	dlq       *dlqWriter

	status statusBox
	loop   loopState // owned by the Run goroutine
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
	name, arn := cfg.streamParams()
	p := &Producer{
		cfg:       cfg,
		client:    client,
		putter:    newWirePutter(client, name, arn, cfg.MaxInFlight),
		log:       log.With("stream", cfg.streamLabel()),
		m:         newMetrics(reg),
		label:     cfg.streamLabel(),
		older:     map[uint64]int{},
		wake:      make(chan struct{}, 1),
		failed:    make(chan struct{}),
		done:      make(chan struct{}),
		sendCh:    make(chan *batch, cfg.MaxInFlight),
		results:   make(chan *batch, cfg.MaxInFlight),
		ctrl:      make(chan any, 16),
		refreshCh: make(chan struct{}, 1),
	}
	p.dlq = newDLQWriter(cfg.DLQDir, p.label, p.ctrl)
	p.dlq.limit, p.dlq.log = cfg.DLQFailureLimit, p.log
	p.status.init(cfg)
	return p, nil
}

// Put encodes e and queues it for the stream. The producer keeps the
// envelope and e.OnAck, not e: the caller's event (and its row images) can
// be freed or reused once Put returns. It blocks while the
// in-flight budget (MaxInFlightBytes, MaxInFlightEvents) is used up; an
// event larger than the whole budget is admitted when nothing else is in
// flight. e.Ack is called exactly once, after Kinesis accepted the record
// (or its dead-letter placeholder). Put normalises e.PartitionKey (see
// DESIGN.md: never empty, at most 256 bytes) so that the envelope carries
// the key the record is put with.
//
// Put returns the producer's fatal error once it has failed, ErrClosed
// once Run has returned, ctx's error when ctx ends while waiting, or an
// encoding error (the event is then not taken).
func (p *Producer) Put(ctx context.Context, e *cdc.Event) error {
	select {
	case <-p.failed:
		return p.failErr
	default:
	}
	pk := partitionKey(e)
	if pk != e.PartitionKey {
		e.PartitionKey = pk
	}
	buf, err := encode(e)
	if err != nil {
		return fmt.Errorf("kinesis producer: %w", err)
	}
	r := newRecord()
	r.ack = e.OnAck
	r.id = e.ID
	r.subject = e.Subject
	r.buf = buf
	r.pk = pk
	r.hash = hashOf(pk)
	r.truncate = isTruncate(e)
	r.cost = int64(cap(buf)) + int64(len(pk)) + recordOverhead
	return p.admit(ctx, r)
}

func (p *Producer) admit(ctx context.Context, r *record) error {
	p.mu.Lock()
	for {
		if p.stopped {
			p.mu.Unlock()
			freeRecord(r)
			return ErrClosed
		}
		if p.usedEvents == 0 || (p.usedBytes+r.cost <= p.cfg.MaxInFlightBytes && p.usedEvents < p.cfg.MaxInFlightEvents) {
			break
		}
		ch := p.space
		if ch == nil {
			ch = make(chan struct{})
			p.space = ch
		}
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			freeRecord(r)
			return ctx.Err()
		case <-p.failed:
			freeRecord(r)
			return p.failErr
		}
		p.mu.Lock()
	}
	p.usedBytes += r.cost
	p.usedEvents++
	r.epoch = p.epoch
	p.epochN++
	p.intake = append(p.intake, r)
	signal := len(p.intake) == 1
	p.mu.Unlock()
	if signal {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// release returns the budget of acknowledged records.
func (p *Producer) release(recs []*record) {
	var bytes int64
	p.mu.Lock()
	for _, r := range recs {
		bytes += r.cost
		if r.epoch == p.epoch {
			p.epochN--
		} else if n := p.older[r.epoch] - 1; n > 0 {
			p.older[r.epoch] = n
		} else {
			delete(p.older, r.epoch)
			if p.flushed != nil {
				close(p.flushed)
				p.flushed = nil
			}
		}
	}
	p.usedBytes -= bytes
	p.usedEvents -= len(recs)
	if p.space != nil {
		close(p.space)
		p.space = nil
	}
	usedB, usedE := p.usedBytes, p.usedEvents
	p.mu.Unlock()
	p.m.inflightBytes.Set(float64(usedB))
	p.m.inflightEv.Set(float64(usedE))
}

// Flush waits until every event Put before the call is acknowledged,
// sending without waiting for the linger meanwhile. It returns early with
// the producer's fatal error, ErrClosed, or ctx's error.
func (p *Producer) Flush(ctx context.Context) error {
	p.flushers.Add(1)
	defer p.flushers.Add(-1)
	select {
	case p.wake <- struct{}{}:
	default:
	}
	p.mu.Lock()
	target := p.epoch
	if p.epochN > 0 {
		p.older[p.epoch] = p.epochN
		p.epochN = 0
		p.epoch++
	}
	for {
		pending := false
		for e := range p.older {
			if e <= target {
				pending = true
				break
			}
		}
		if !pending {
			p.mu.Unlock()
			return nil
		}
		if p.stopped {
			p.mu.Unlock()
			return ErrClosed
		}
		if p.flushed == nil {
			p.flushed = make(chan struct{})
		}
		ch := p.flushed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.failed:
			return p.failErr
		case <-p.done:
			return ErrClosed
		}
		p.mu.Lock()
	}
}

// fail records the producer's fatal error (the first one wins).
func (p *Producer) fail(err error) {
	p.failOnce.Do(func() {
		p.failErr = err
		close(p.failed)
		p.status.setFatal(err)
	})
}

// Ready reports whether the stream was described and its shards listed.
func (p *Producer) Ready() bool { return p.ready.Load() }

// Status returns a JSON-marshalable snapshot for /status.
func (p *Producer) Status() any {
	p.mu.Lock()
	usedB, usedE := p.usedBytes, p.usedEvents
	p.mu.Unlock()
	return p.status.snapshot(p.ready.Load(), usedB, usedE)
}
