// Package dynamodb captures the changes of a DynamoDB table from its
// DynamoDB Stream and hands them, in order per item, to the sink.
//
// Guarantees:
//   - Nothing is lost: a shard's checkpoint is the sequence number below
//     which every record was accepted downstream (one ack tracker per
//     shard), saved about once a second and when Run returns; a restart
//     resumes after it. Crashes and retries cause duplicates (same id and
//     sequence), never gaps. Records that expire (24-hour retention) before
//     they are read are a gap DynamoDB made: they are counted
//     (cdcbridge_dynamodb_trimmed_total), logged as errors and, by
//     Config.OnTrimmed, stop the source ("fail", the default) or are
//     skipped ("skip").
//   - Order per item: a shard is read by one reader at a time, in sequence
//     order; a child shard is read only after its parent was read to its
//     end and that end was checkpointed (shards split, never merge, so an
//     item's changes move from a parent to one of its children). A shard
//     whose parent has aged out of the stream starts at once.
//   - Checkpoints never move backwards, and a finished shard's checkpoint
//     ("SHARD_END") sorts after every sequence number.
//   - With Config.Leases, several instances share the stream: each shard
//     is read by the holder of its lease, parents before children across
//     instances, with each instance near its fair share. An instance whose
//     renewals are overdue stops reading a shard before its lease can
//     expire, and (with Config.Fence) stops sending its records when it
//     may expire; a new owner reads only after the previous one's lease
//     and last send attempt ran out. Details in lease.go and balance.go.
//   - Loads (Config.Snapshot, RequestDir; without Leases): the table's
//     existing items go out as read events while the stream is read; a
//     read never follows a newer stream change of its item nor precedes
//     an older one, and a crash delivers at most one page per segment
//     again (snapshot.go, snapgate.go, README.md).
//
// Checkpoints (checkpoint.Store keys):
//
//	dynamodb/<streamARN>/<shardID>  Position: the last checkpointed sequence
//	                                number padded to 40 digits; "SHARD_END"
//	                                once the shard was read to its end (Data
//	                                says when, and whether it was skipped or
//	                                trimmed); "" for a shard started at
//	                                LATEST that had no record yet.
//	dynamodb/<streamARN>            the stream's first start (Data: start
//	                                position and time): without it a start is
//	                                a first start and Config.Start applies.
//	dynamodb-snapshot/<table>       the table's loads and, per segment, the
//	                                LastEvaluatedKey of its last delivered
//	                                page (Position: a save counter).
//
// Config.Start applies only at a stream's first start. Shards found later
// always start at their oldest record (TRIM_HORIZON): a new child shard
// holds changes made after the bridge started, which must not be skipped.
package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/cdcbridge/cdcbridge/internal/choice"
	"github.com/cdcbridge/cdcbridge/internal/fence"
)

// Start positions for shards of a stream read for the first time.
const (
	StartTrimHorizon = "trim_horizon"
	StartLatest      = "latest"
)

// What to do when records expired before they were read.
const (
	OnTrimmedFail = "fail"
	OnTrimmedSkip = "skip"
)

// Config configures a Source. Zero values take the documented defaults.
type Config struct {
	// Table is the table whose stream is read; its stream ARN is found
	// with DescribeTable. Exactly one of Table and StreamARN is set.
	Table     string
	StreamARN string

	// Start is where a stream read for the first time begins:
	// "trim_horizon" (default: every record still in the stream) or
	// "latest" (only changes made from now on).
	Start string
	// OnTrimmed is what happens when records expired before they were
	// read: "fail" (default: stop with an error) or "skip" (log, count and
	// continue from the oldest record still available).
	OnTrimmed string

	// IdleInterval is the wait before polling a shard again after a read
	// found nothing new (default 1s). While records keep coming, reads
	// follow each other without a pause.
	IdleInterval time.Duration
	// DiscoverInterval is how often the stream's shards are listed again
	// (default 10s, jittered by ±20%). A shard reaching its end also
	// triggers a look for its children.
	DiscoverInterval time.Duration
	// Heartbeat, when set, is called by the source's loops on every
	// iteration, including while they wait normally.
	Heartbeat func()

	// CheckpointInterval is how often acknowledged positions are saved
	// (default 1s). Positions are also saved when Run returns.
	CheckpointInterval time.Duration
	// CheckpointFailureLimit is how long checkpoint saves may keep failing
	// before Run stops with the error (default 2m). Until then the source
	// keeps reading and reports itself degraded.
	CheckpointFailureLimit time.Duration
	// RequestTimeout bounds each DynamoDB Streams call (default 20s); a
	// call that takes longer is retried.
	RequestTimeout time.Duration
	// MaxBackoff caps the wait between retries of throttled or failed
	// calls (default 10s).
	MaxBackoff time.Duration
	// DescribeRate is this instance's budget of DescribeStream calls per
	// second (default 2). The API allows about 10 per second per stream,
	// shared by every reader of the stream.
	DescribeRate float64

	// Leases, when set, shares the stream's shards with the other
	// instances using the same table (see lease.go): each shard is read by
	// the instance holding its lease, checkpoints are saved through the
	// leases, and full shard listings are spaced over all instances
	// (DiscoverInterval applies to them together). Without it this
	// instance reads every shard, and the store must not be shared.
	Leases LeaseStore
	// LeaseDuration is how long a lease lasts without renewal (default
	// 10s): an instance that dies is replaced after about this long plus
	// SendTimeout. Renewals run every third of it.
	LeaseDuration time.Duration
	// SendTimeout is the longest one attempt to send records downstream
	// can last (the sink's request timeout; default 10s). A lease taken
	// over is read only once its previous owner's lease ran out and its
	// last attempt ended.
	SendTimeout time.Duration
	// Fence, when set, is the gate of the sink's sends (see
	// internal/fence): each tenure keeps a hold on it, so that the
	// records of a shard stop being sent when its lease may have moved.
	Fence *fence.Gate

	// Snapshot is "initial" (load the table's existing items at the
	// stream's first start, see snapshot.go) or "never" (default). Loads
	// asked for through RequestDir run either way. Loads need the stream
	// of this instance alone: not with Leases.
	Snapshot string
	// SnapshotSegments is the number of segments of a load's parallel Scan
	// (default: one per GiB or per million items of the table, at least 1
	// and at most 16; at most 1000; each holds up to three 1 MB pages in
	// memory).
	SnapshotSegments int
	// SnapshotMaxRCU is the read capacity per second a load may use,
	// measured from the consumed capacity DynamoDB reports (default: half
	// the table's provisioned read capacity; none for an on-demand table).
	SnapshotMaxRCU float64
	// SnapshotConfirmLong runs a load estimated to take near or over the
	// stream's 24-hour retention; without it such a load is refused.
	SnapshotConfirmLong bool
	// SnapshotMargin is how far past a page's read time every shard must
	// have been read before the page is delivered (default 2s; see
	// snapgate.go).
	SnapshotMargin time.Duration
	// RequestDir is the directory `cdcbridge snapshot` writes requests to
	// ("": none are taken). RequestPoll is how often it is looked at
	// (default 2s).
	RequestDir  string
	RequestPoll time.Duration
}

func (c *Config) setDefaults() {
	if c.Start == "" {
		c.Start = StartTrimHorizon
	}
	if c.OnTrimmed == "" {
		c.OnTrimmed = OnTrimmedFail
	}
	if c.IdleInterval == 0 {
		c.IdleInterval = DefaultIdleInterval
	}
	if c.DiscoverInterval == 0 {
		c.DiscoverInterval = 10 * time.Second
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Second
	}
	if c.CheckpointFailureLimit == 0 {
		c.CheckpointFailureLimit = 2 * time.Minute
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 20 * time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.DescribeRate == 0 {
		c.DescribeRate = 2
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 10 * time.Second
	}
	if c.Snapshot == "" {
		c.Snapshot = SnapshotNever
	}
	if c.SnapshotMargin == 0 {
		c.SnapshotMargin = 2 * time.Second
	}
	if c.RequestPoll == 0 {
		c.RequestPoll = 2 * time.Second
	}
}

// minLeaseDuration keeps renewals (a third of it) longer than a request.
const minLeaseDuration = 300 * time.Millisecond

// Defaults of Config, declared once: setDefaults applies them, and
// cmd/cdcbridge prints them as its variables' defaults.
const (
	DefaultIdleInterval  = time.Second
	DefaultLeaseDuration = 10 * time.Second
)

// The validators below are the rules of Config's fields, exported so that
// cmd/cdcbridge checks its variables with the same functions validate
// uses. Their errors do not name the field: each caller prefixes its own.

var tableNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{3,255}$`)

// ValidateTable checks a table name: 3 to 255 letters, digits, _ . -.
// validate leaves the name to DynamoDB, which refuses a bad one on the
// first call; the daemon's configuration checks it before it starts.
func ValidateTable(s string) error {
	if !tableNameRE.MatchString(s) {
		return fmt.Errorf("%q is not a DynamoDB table name (3 to 255 letters, digits, '_', '.' and '-')", s)
	}
	return nil
}

// ValidateStreamARN checks StreamARN.
func ValidateStreamARN(s string) error {
	_, _, _, err := parseStreamARN(s)
	return err
}

// ValidateStart checks Start.
func ValidateStart(s string) error { return choice.Check(s, StartTrimHorizon, StartLatest) }

// ValidateOnTrimmed checks OnTrimmed.
func ValidateOnTrimmed(s string) error { return choice.Check(s, OnTrimmedFail, OnTrimmedSkip) }

// ValidateSnapshot checks Snapshot.
func ValidateSnapshot(s string) error { return choice.Check(s, SnapshotInitial, SnapshotNever) }

// ValidateSnapshotSegments checks SnapshotSegments: 0 (from the table's
// size) to 1000.
func ValidateSnapshotSegments(n int) error {
	if n < 0 || n > maxSegments {
		return fmt.Errorf("%d: want 0 (from the table's size) to %d", n, maxSegments)
	}
	return nil
}

// ValidateSnapshotMaxRCU checks SnapshotMaxRCU: 0 (the default budget)
// or more.
func ValidateSnapshotMaxRCU(f float64) error {
	if !(f >= 0) || math.IsInf(f, 0) {
		return fmt.Errorf("%v: want a number of read capacity units per second, 0 or more", f)
	}
	return nil
}

func (c *Config) validate() error {
	var errs []error
	check := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %w", field, err))
		}
	}
	if (c.Table == "") == (c.StreamARN == "") {
		errs = append(errs, errors.New("exactly one of Table and StreamARN must be set"))
	}
	if c.StreamARN != "" {
		check("StreamARN:", ValidateStreamARN(c.StreamARN))
	}
	check("Start", ValidateStart(c.Start))
	check("OnTrimmed", ValidateOnTrimmed(c.OnTrimmed))
	for name, d := range map[string]time.Duration{
		"IdleInterval": c.IdleInterval, "DiscoverInterval": c.DiscoverInterval,
		"CheckpointInterval": c.CheckpointInterval, "CheckpointFailureLimit": c.CheckpointFailureLimit,
		"RequestTimeout": c.RequestTimeout, "MaxBackoff": c.MaxBackoff, "SendTimeout": c.SendTimeout,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", name, d))
		}
	}
	if c.Leases != nil && c.LeaseDuration < minLeaseDuration {
		errs = append(errs, fmt.Errorf("LeaseDuration %v: want at least %v", c.LeaseDuration, minLeaseDuration))
	}
	check("Snapshot", ValidateSnapshot(c.Snapshot))
	if c.Snapshot == SnapshotInitial && c.Leases != nil {
		errs = append(errs, errors.New("Snapshot initial: loads are not supported yet with leases (a shared checkpoint store)"))
	}
	check("SnapshotSegments", ValidateSnapshotSegments(c.SnapshotSegments))
	check("SnapshotMaxRCU", ValidateSnapshotMaxRCU(c.SnapshotMaxRCU))
	if c.SnapshotMargin < 0 || c.RequestPoll < 0 {
		errs = append(errs, errors.New("SnapshotMargin and RequestPoll must not be negative"))
	}
	if c.DescribeRate < 0 {
		errs = append(errs, fmt.Errorf("DescribeRate %v: must not be negative", c.DescribeRate))
	}
	return errors.Join(errs...)
}

// Source reads a DynamoDB stream. Create it with New and call Run once.
type Source struct {
	cfg     Config
	ddb     *dynamodb.Client
	streams *dynamodbstreams.Client
	store   checkpoint.Store
	log     *slog.Logger
	m       *metrics
	lm      *leaseManager // nil without Config.Leases
	loader  *loader       // nil with Config.Leases
	recent  recentKeys

	describeLimit *rate.Limiter
	started       atomic.Bool
	ready         atomic.Bool
	health        health

	mu            sync.Mutex // guards what follows
	info          streamInfo
	shards        map[string]*shard
	streamStatus  string
	lastDiscovery time.Time
	lastListing   time.Time // when the last full listing was requested
	loads         []SnapshotInfo
	loadsSeq      uint64 // of the loader's publish that set loads
}

// New returns a source on the stream of cfg.Table (found with ddb, which
// may be nil when cfg.StreamARN is set). It validates the configuration
// and registers the metrics with reg (nil: not registered); it starts
// nothing.
func New(cfg Config, ddb *dynamodb.Client, streams *dynamodbstreams.Client, store checkpoint.Store,
	reg prometheus.Registerer, log *slog.Logger) (*Source, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("dynamodb source: %w", err)
	}
	switch {
	case streams == nil:
		return nil, errors.New("dynamodb source: nil DynamoDB Streams client")
	case ddb == nil && cfg.Table != "":
		return nil, errors.New("dynamodb source: a DynamoDB client is needed to find the stream of a table")
	case store == nil:
		return nil, errors.New("dynamodb source: nil checkpoint store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{
		cfg:           cfg,
		ddb:           ddb,
		streams:       streams,
		store:         store,
		log:           log,
		m:             newMetrics(reg),
		describeLimit: rate.NewLimiter(rate.Limit(cfg.DescribeRate), 1),
		shards:        map[string]*shard{},
	}
	if cfg.Leases != nil {
		s.lm = newLeaseManager(s)
	} else if ddb != nil {
		s.loader = newLoader(s)
	} else if cfg.Snapshot == SnapshotInitial {
		return nil, errors.New("dynamodb source: a DynamoDB client is needed for loads of the table")
	}
	registerGauges(reg, s)
	return s, nil
}

// Ready reports whether the stream was found and its shards listed once.
func (s *Source) Ready() bool { return s.ready.Load() }

// finalSaveTimeout bounds the checkpoint save when Run returns.
const finalSaveTimeout = 10 * time.Second

// Run reads the stream and passes every change to emit until ctx ends or a
// fatal error occurs. It saves checkpoints about once a second and once
// more before it returns. Run may be called only once.
func (s *Source) Run(ctx context.Context, emit cdc.Emit) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("dynamodb source: Run called twice")
	}
	if err := s.resolve(ctx); err != nil {
		return err
	}
	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	// The lease keeper outlives the readers: leases stay renewed until the
	// final checkpoints are saved and the leases handed back.
	var keepErr chan error
	stopKeep := func() {}
	if s.lm != nil {
		s.lm.scope = streamScope(s.info.arn)
		kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		stopKeep = stop
		keepErr = make(chan error, 1)
		go func() {
			err := s.lm.keep(kctx)
			if err != nil {
				cancelRun(err)
			}
			keepErr <- err
		}()
	}
	defer stopKeep()
	if s.loader != nil {
		if err := s.loader.open(ctx); err != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(runCtx)
	c := newCoordinator(s, emit, g)
	g.Go(func() error { return c.run(gctx) })
	g.Go(func() error { return s.saveLoop(gctx) })
	if s.loader != nil {
		g.Go(func() error { return s.loader.run(gctx, emit) })
	}
	err := g.Wait()

	// Readers have stopped: what is acknowledged now is final for this run.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalSaveTimeout)
	defer cancel()
	if serr := s.saveAll(fctx); serr != nil {
		s.log.Error("saving checkpoints on exit failed; the next start re-reads from older ones", "err", serr)
		if err == nil || errors.Is(err, context.Canceled) {
			err = serr
		}
	}
	if s.lm != nil {
		s.lm.releaseAll(fctx)
		stopKeep()
		if kerr := <-keepErr; kerr != nil {
			err = kerr
		}
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
}

func (s *Source) heartbeat() {
	if s.cfg.Heartbeat != nil {
		s.cfg.Heartbeat()
	}
}

// streamScope is the checkpoint scope of the stream (see package doc).
func streamScope(arn string) string { return "dynamodb/" + arn }

func shardKey(arn, shardID string) string { return streamScope(arn) + "/" + shardID }
