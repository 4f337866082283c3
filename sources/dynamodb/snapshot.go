package dynamodb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"golang.org/x/sync/errgroup"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// Loads ("snapshots"): the table's existing items, read with a parallel
// Scan (ConsistentRead) while the stream is read, delivered as read
// events. The initial load runs at a stream's first start (Config.Snapshot
// "initial"); `cdcbridge snapshot TABLE` asks for more (snaprequest.go).
// How reads and stream records meet is in snapgate.go.
//
// Progress is kept in the checkpoint store under loadKey(table): every job,
// and per segment the LastEvaluatedKey of its last page whose items were
// all accepted by the sink. A page is delivered only once the previous
// page of its segment was accepted and that progress saved, so a crash
// delivers at most one page per segment again.

// Snapshot modes.
const (
	SnapshotInitial = "initial"
	SnapshotNever   = "never"
)

// Job and segment states, named as the PostgreSQL snapshots name theirs.
const (
	loadPending   = "pending"
	loadReading   = "reading"
	loadDone      = "done"
	loadCancelled = "cancelled"
	loadFailed    = "failed"
)

// maxSegments bounds CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS: each segment
// holds up to two pages (2 MB) in memory.
const maxSegments = 1000

// longLoad is the estimated duration from which a load must be confirmed:
// near the stream's 24-hour retention.
const longLoad = 20 * time.Hour

// keptFinishedLoads is how many finished jobs the state keeps for --status.
const keptFinishedLoads = 20

type loadJob struct {
	ID        string `json:"id"`
	Table     string `json:"table"`
	Initial   bool   `json:"initial,omitempty"`
	Requested string `json:"requested"`
	State     string `json:"state"`
	Cancelled bool   `json:"cancelled,omitempty"`
	Started   string `json:"started,omitempty"`
	Finished  string `json:"finished,omitempty"`
	Note      string `json:"note,omitempty"`
	// EstimatedItems is the table's item count when the job started
	// (DescribeTable, which AWS updates about every six hours).
	EstimatedItems int64          `json:"estimated_items,omitempty"`
	ConsumedRCU    float64        `json:"consumed_rcu,omitempty"`
	Segments       []*loadSegment `json:"segments,omitempty"`
}

type loadSegment struct {
	State string `json:"state"`
	// LastKey is the LastEvaluatedKey of the last page whose items were
	// all accepted; the segment goes on after it.
	LastKey map[string]keyValue `json:"last_key,omitempty"`
	Items   int64               `json:"items"` // delivered
	Dropped int64               `json:"dropped,omitempty"`
	Pages   int64               `json:"pages"`
	// LargestPage is the most items a delivered page held: what a crash
	// may deliver again.
	LargestPage int `json:"largest_page,omitempty"`
}

func (j *loadJob) finished() bool { return j.Finished != "" }

func (j *loadJob) clone() *loadJob {
	c := *j
	c.Segments = make([]*loadSegment, len(j.Segments))
	for i, sg := range j.Segments {
		sc := *sg
		c.Segments[i] = &sc
	}
	return &c
}

func (j *loadJob) items() (items, dropped int64) {
	for _, sg := range j.Segments {
		items += sg.Items
		dropped += sg.Dropped
	}
	return items, dropped
}

// loadState is what the store keeps under loadKey.
type loadState struct {
	Jobs []*loadJob `json:"jobs"`
}

// loadKey is the checkpoint key of a table's loads.
func loadKey(table string) string { return "dynamodb-snapshot/" + table }

func nowText() string { return time.Now().UTC().Format(time.RFC3339) }

// loadStateFrom reads the loads of table from store.
func loadStateFrom(ctx context.Context, store checkpoint.Store, table string) (*loadState, uint64, error) {
	c, err := store.Load(ctx, loadKey(table))
	if errors.Is(err, checkpoint.ErrNotFound) {
		return &loadState{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("loading %s: %w", loadKey(table), err)
	}
	var version uint64
	if _, err := fmt.Sscanf(c.Position, "%d", &version); err != nil {
		return nil, 0, fmt.Errorf("checkpoint %s: position %q is not a version", loadKey(table), c.Position)
	}
	var st loadState
	if err := json.Unmarshal(c.Data, &st); err != nil {
		return nil, 0, fmt.Errorf("checkpoint %s: %w", loadKey(table), err)
	}
	return &st, version, nil
}

// loader runs a table's loads, one job at a time, in the order they came.
type loader struct {
	s    *Source
	emit cdc.Emit

	mu      sync.Mutex // guards jobs and rates
	jobs    []*loadJob
	rates   map[string]*loadRate
	saveMu  sync.Mutex // one save at a time, versions in order
	version uint64

	active sync.Map // *byte -> time.Time: before the Scan request of a page not yet delivered

	inProgress atomic.Int64 // segments reading
}

type loadRate struct {
	lastItems int64
	lastRCU   float64
	items     float64 // per second, smoothed
	rcu       float64
	at        time.Time
}

func newLoader(s *Source) *loader { return &loader{s: s, rates: map[string]*loadRate{}} }

// open reads the table's loads from the store.
func (l *loader) open(ctx context.Context) error {
	st, version, err := loadStateFrom(ctx, l.s.store, l.s.info.table)
	if err != nil {
		return fmt.Errorf("dynamodb source: %w", err)
	}
	l.jobs, l.version = st.Jobs, version
	l.publish()
	return nil
}

// save stores the jobs now.
func (l *loader) save(ctx context.Context) error {
	l.saveMu.Lock()
	defer l.saveMu.Unlock()
	l.mu.Lock()
	st := loadState{Jobs: make([]*loadJob, 0, len(l.jobs))}
	for _, j := range l.jobs {
		st.Jobs = append(st.Jobs, j.clone())
	}
	l.mu.Unlock()
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	next := l.version + 1
	sctx, cancel := context.WithTimeout(ctx, l.s.cfg.RequestTimeout)
	defer cancel()
	if err := l.s.store.Save(sctx, loadKey(l.s.info.table), checkpoint.Checkpoint{Position: fmt.Sprintf("%020d", next), Data: b}); err != nil {
		if errors.Is(err, checkpoint.ErrStale) {
			return fmt.Errorf("dynamodb source: the loads of %s were saved by another writer (is a second instance using this store?): %w", l.s.info.table, err)
		}
		return fmt.Errorf("dynamodb source: saving the loads of %s: %w", l.s.info.table, err)
	}
	l.version = next
	l.s.m.commits.Inc()
	return nil
}

// saveRetrying saves until it works, ctx ends or the store says another
// writer is ahead.
func (l *loader) saveRetrying(ctx context.Context) error {
	bo := newBackoff(200*time.Millisecond, l.s.cfg.MaxBackoff)
	for {
		err := l.save(ctx)
		if err == nil || ctx.Err() != nil || errors.Is(err, checkpoint.ErrStale) {
			return err
		}
		l.s.m.commitFailures.Inc()
		l.s.health.set("saving snapshot progress failing", err)
		l.s.log.Warn("snapshot: saving progress failed; retrying", "err", err)
		if err := bo.wait(ctx); err != nil {
			return err
		}
	}
}

// update changes the jobs under the lock and refreshes the status.
func (l *loader) update(f func()) {
	l.mu.Lock()
	f()
	l.mu.Unlock()
	l.publish()
}

// addInitial queues the initial load at a stream's first start, unless an
// earlier first start (that crashed before its end) already did.
func (l *loader) addInitial(ctx context.Context) error {
	l.mu.Lock()
	has := slices.ContainsFunc(l.jobs, func(j *loadJob) bool { return j.Initial })
	if !has {
		l.jobs = append(l.jobs, &loadJob{ID: newSnapshotID(), Table: l.s.info.table, Initial: true, Requested: nowText(), State: loadPending})
	}
	l.mu.Unlock()
	if has {
		return nil
	}
	l.publish()
	return l.saveRetrying(ctx)
}

// next returns the first unfinished job, finishing cancelled ones that
// have not started, and forgets the oldest finished jobs beyond
// keptFinishedLoads.
func (l *loader) next() (next *loadJob, changed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out *loadJob
	for _, j := range l.jobs {
		if j.finished() {
			continue
		}
		if j.Cancelled && j.State == loadPending {
			j.State, j.Finished = loadCancelled, nowText()
			changed = true
			continue
		}
		if j.Initial && j.State == loadPending && l.s.cfg.Snapshot == SnapshotNever {
			j.State, j.Finished, j.Note = loadCancelled, nowText(), "CDCBRIDGE_DYNAMODB_SNAPSHOT=never"
			changed = true
			continue
		}
		if out == nil {
			out = j
		}
	}
	finished := 0
	for _, j := range l.jobs {
		if j.finished() {
			finished++
		}
	}
	for drop := finished - keptFinishedLoads; drop > 0; drop-- {
		i := slices.IndexFunc(l.jobs, (*loadJob).finished)
		l.jobs = slices.Delete(l.jobs, i, i+1)
		changed = true
	}
	return out, changed
}

func (l *loader) cancelled(j *loadJob) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return j.Cancelled
}

// run runs the loads until ctx ends. It returns an error only for what
// stops the source: a refused initial load, a store that another writer
// moved ahead, or a record the sink refused.
func (l *loader) run(ctx context.Context, emit cdc.Emit) error {
	l.emit = emit
	if err := waitStream(ctx, l.s.streamOpened); err != nil {
		return nil
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		if err := l.s.takeRequests(ctx, l); err != nil {
			return err
		}
		job, changed := l.next()
		if changed {
			l.publish()
			if err := l.saveRetrying(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		if job != nil {
			if err := l.runJob(ctx, job); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			l.s.heartbeat()
		case <-poll.C:
			poll.Reset(l.s.cfg.RequestPoll)
		}
	}
}

// tableInfo is what DescribeTable says about the table for a load.
type tableInfo struct {
	items, bytes int64
	onDemand     bool
	readCapacity int64
	hashKey      string
	rangeKey     string
}

func (s *Source) describeTable(ctx context.Context, table string) (tableInfo, error) {
	var out *dynamodb.DescribeTableOutput
	err := s.retrying(ctx, "DescribeTable", func(ctx context.Context) error {
		var err error
		out, err = s.ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		return err
	})
	if err != nil {
		return tableInfo{}, fmt.Errorf("describing table %s: %w", table, err)
	}
	return describeOutput(out), nil
}

func describeOutput(out *dynamodb.DescribeTableOutput) tableInfo {
	t := out.Table
	ti := tableInfo{items: aws.ToInt64(t.ItemCount), bytes: aws.ToInt64(t.TableSizeBytes)}
	if t.BillingModeSummary != nil && t.BillingModeSummary.BillingMode == ddbtypes.BillingModePayPerRequest {
		ti.onDemand = true
	}
	if t.ProvisionedThroughput != nil {
		ti.readCapacity = aws.ToInt64(t.ProvisionedThroughput.ReadCapacityUnits)
	}
	if ti.readCapacity == 0 {
		ti.onDemand = true
	}
	for _, k := range t.KeySchema {
		switch k.KeyType {
		case ddbtypes.KeyTypeHash:
			ti.hashKey = aws.ToString(k.AttributeName)
		case ddbtypes.KeyTypeRange:
			ti.rangeKey = aws.ToString(k.AttributeName)
		}
	}
	return ti
}

// runJob runs one job to its end (done, cancelled or failed).
func (l *loader) runJob(ctx context.Context, job *loadJob) error {
	s := l.s
	ti, err := s.describeTable(ctx, job.Table)
	var notFound *ddbtypes.ResourceNotFoundException
	switch {
	case errors.As(err, &notFound):
		l.fail(ctx, job, "the table does not exist")
		return l.saveRetrying(ctx)
	case err != nil:
		return err
	}
	s.mu.Lock()
	if s.info.hashKey == "" {
		s.info.hashKey, s.info.rangeKey = ti.hashKey, ti.rangeKey
	}
	info := s.info
	s.mu.Unlock()
	est := estimate(s.cfg, ti)
	l.mu.Lock()
	starting := job.State == loadPending
	if starting {
		job.Segments = make([]*loadSegment, est.Segments)
		for i := range job.Segments {
			job.Segments[i] = &loadSegment{State: loadPending}
		}
		job.EstimatedItems = ti.items
	}
	l.mu.Unlock()
	if starting && est.TooLong && !s.cfg.SnapshotConfirmLong {
		msg := est.tooLongText()
		s.log.Error("snapshot: refused: "+msg, "id", job.ID, "table", job.Table, "estimated_items", ti.items, "estimated_bytes", ti.bytes,
			"estimated_duration", est.Duration.Round(time.Minute).String(), "max_rcu", est.MaxRCU)
		if job.Initial {
			// The job stays pending: the next start, with a larger budget or
			// the confirmation, runs it.
			return fmt.Errorf("dynamodb source: the initial load of table %s: %s", job.Table, msg)
		}
		l.fail(ctx, job, msg)
		return l.saveRetrying(ctx)
	}
	l.update(func() {
		if starting {
			job.State, job.Started = loadReading, nowText()
		}
	})
	if err := l.saveRetrying(ctx); err != nil {
		return err
	}
	if ti.onDemand {
		s.log.Info("snapshot: the table is on demand: the load costs about its size in strongly consistent read request units",
			"id", job.ID, "table", job.Table, "estimated_read_units", math.Ceil(float64(ti.bytes)/4096))
	}
	items, _ := job.items()
	s.log.Info("snapshot: load started", "id", job.ID, "table", job.Table, "resumed", !starting, "segments", len(job.Segments),
		"estimated_items", ti.items, "estimated_bytes", ti.bytes, "items_delivered", items, "max_rcu", est.MaxRCU,
		"estimated_duration", est.Duration.Round(time.Second).String())
	started := time.Now()

	b := newBudget(est.MaxRCU)
	s.recent.start()
	defer s.recent.stop()
	g, gctx := errgroup.WithContext(ctx)
	for i, sg := range job.Segments {
		if sg.State == loadDone {
			continue
		}
		g.Go(func() error { return l.segment(gctx, info, job, i, b) })
	}
	stopForget := make(chan struct{})
	go l.forgetLoop(stopForget)
	err = g.Wait()
	close(stopForget)
	if err != nil {
		return err
	}
	state := loadDone
	if l.cancelled(job) {
		state = loadCancelled
	}
	l.update(func() { job.State, job.Finished = state, nowText() })
	if err := l.saveRetrying(ctx); err != nil {
		return err
	}
	items, dropped := job.items()
	s.log.Info("snapshot: load "+state, "id", job.ID, "table", job.Table, "items", items, "dropped_for_stream", dropped,
		"consumed_rcu", math.Round(job.ConsumedRCU), "took", time.Since(started).Round(time.Millisecond).String())
	return nil
}

func (l *loader) fail(_ context.Context, job *loadJob, why string) {
	l.s.log.Error("snapshot: load failed", "id", job.ID, "table", job.Table, "reason", why)
	l.update(func() { job.State, job.Note, job.Finished = loadFailed, why, nowText() })
}

// forgetLoop drops the stream's noted keys that no page in flight needs.
func (l *loader) forgetLoop(stop chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		oldest := time.Now()
		l.active.Range(func(_, v any) bool {
			if at := v.(time.Time); at.Before(oldest) {
				oldest = at
			}
			return true
		})
		l.s.recent.forget(oldest)
		l.publish()
	}
}

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
				scanErr = err
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
	defer func() {
		stop()
		for p := range pages {
			l.active.Delete(p.token)
		}
		<-scanned
	}()

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
	if scanErr != nil {
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
				return nil, fmt.Errorf("dynamodb source: snapshot %s: scanning segment %d of %s: %w", sc.job.ID, sc.seg, sc.job.Table, err)
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

// LoadEstimate is what a load of a table is expected to take.
type LoadEstimate struct {
	Items, Bytes int64
	Segments     int
	// MaxRCU is the budget in read capacity units per second (0: none,
	// an on-demand table without CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU).
	MaxRCU   float64
	OnDemand bool
	// Duration is the size read at the budget (strongly consistent: 4 KB
	// per unit), or without a budget at segmentBytesPerSecond per segment,
	// whichever is slower.
	Duration time.Duration
	// TooLong: Duration comes near the stream's 24-hour retention.
	TooLong bool
}

// segmentBytesPerSecond is what one segment is assumed to read without a
// budget, for the estimate.
const segmentBytesPerSecond = 512 << 10

func (e LoadEstimate) tooLongText() string {
	return fmt.Sprintf("the load of about %d items (%d bytes) is estimated to take %s at %s, near or over the stream's 24-hour retention; "+
		"raise CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU (or CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS), or set CDCBRIDGE_DYNAMODB_SNAPSHOT_CONFIRM_LONG=true to run it anyway",
		e.Items, e.Bytes, e.Duration.Round(time.Minute), e.rateText())
}

func (e LoadEstimate) rateText() string {
	if e.MaxRCU > 0 {
		return fmt.Sprintf("%g RCU/s", e.MaxRCU)
	}
	return fmt.Sprintf("%d segments without a budget", e.Segments)
}

// String is the estimate in words, for check.
func (e LoadEstimate) String() string {
	return fmt.Sprintf("about %d items (%d bytes), %d segments, %s: about %s", e.Items, e.Bytes, e.Segments, e.rateText(), e.Duration.Round(time.Second))
}

func estimate(cfg Config, ti tableInfo) LoadEstimate {
	e := LoadEstimate{Items: ti.items, Bytes: ti.bytes, OnDemand: ti.onDemand, Segments: cfg.SnapshotSegments, MaxRCU: cfg.SnapshotMaxRCU}
	if e.Segments == 0 {
		e.Segments = defaultSegments(ti.items, ti.bytes)
	}
	if e.MaxRCU == 0 && !ti.onDemand {
		e.MaxRCU = math.Max(1, float64(ti.readCapacity)/2)
	}
	rate := float64(e.Segments) * segmentBytesPerSecond
	if e.MaxRCU > 0 {
		rate = math.Min(rate, e.MaxRCU*4096)
	}
	e.Duration = time.Duration(float64(ti.bytes) / rate * float64(time.Second))
	e.TooLong = e.Duration >= longLoad
	return e
}

// defaultSegments is one segment per GiB or per million items, at least 1
// and at most 16 (each segment holds up to four 1 MB pages).
func defaultSegments(items, bytes int64) int {
	n := max((bytes+(1<<30)-1)>>30, (items+999_999)/1_000_000, 1)
	return int(min(n, 16))
}

// EstimateLoad returns what a load of cfg's table would take, from
// DescribeTable. For check.
func EstimateLoad(ctx context.Context, cfg Config, ddb *dynamodb.Client) (LoadEstimate, error) {
	cfg.setDefaults()
	table := cfg.Table
	if table == "" {
		_, t, _, err := parseStreamARN(cfg.StreamARN)
		if err != nil {
			return LoadEstimate{}, err
		}
		table = t
	}
	out, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		return LoadEstimate{}, fmt.Errorf("describing table %s: %w", table, err)
	}
	return estimate(cfg, describeOutput(out)), nil
}

// SnapshotSegment is one segment in SnapshotInfo.
type SnapshotSegment struct {
	Segment int    `json:"segment"`
	State   string `json:"state"`
	Items   int64  `json:"items"`
	Pages   int64  `json:"pages"`
	Done    bool   `json:"done"`
	// LargestPage is the most items a page of the segment held.
	LargestPage int `json:"largest_page_items"`
}

// SnapshotInfo is one load in /status and `cdcbridge snapshot --status`.
type SnapshotInfo struct {
	ID             string            `json:"id"`
	Table          string            `json:"table"`
	Initial        bool              `json:"initial,omitempty"`
	Requested      string            `json:"requested"`
	State          string            `json:"state"`
	Cancelled      bool              `json:"cancelled,omitempty"`
	Started        string            `json:"started,omitempty"`
	Finished       string            `json:"finished,omitempty"`
	Note           string            `json:"note,omitempty"`
	Items          int64             `json:"items"`
	Dropped        int64             `json:"items_dropped_for_stream"`
	EstimatedItems int64             `json:"estimated_items,omitempty"`
	ItemsPerSecond float64           `json:"items_per_second,omitempty"`
	ConsumedRCU    float64           `json:"consumed_rcu"`
	RCUPerSecond   float64           `json:"consumed_rcu_per_second,omitempty"`
	Left           string            `json:"time_left,omitempty"`
	Segments       []SnapshotSegment `json:"segments"`
}

func loadInfos(jobs []*loadJob, rates map[string]*loadRate) []SnapshotInfo {
	out := []SnapshotInfo{}
	for _, j := range jobs {
		items, dropped := j.items()
		info := SnapshotInfo{ID: j.ID, Table: j.Table, Initial: j.Initial, Requested: j.Requested, State: j.State, Cancelled: j.Cancelled,
			Started: j.Started, Finished: j.Finished, Note: j.Note, Items: items, Dropped: dropped, EstimatedItems: j.EstimatedItems,
			ConsumedRCU: math.Round(j.ConsumedRCU*10) / 10, Segments: []SnapshotSegment{}}
		for i, sg := range j.Segments {
			info.Segments = append(info.Segments, SnapshotSegment{Segment: i, State: sg.State, Items: sg.Items, Pages: sg.Pages,
				Done: sg.State == loadDone, LargestPage: sg.LargestPage})
		}
		if r := rates[j.ID]; r != nil && j.State == loadReading {
			info.ItemsPerSecond = math.Round(r.items*10) / 10
			info.RCUPerSecond = math.Round(r.rcu*10) / 10
			if r.items > 0 && j.EstimatedItems > items+dropped {
				info.Left = (time.Duration(float64(j.EstimatedItems-items-dropped)/r.items) * time.Second).Round(time.Second).String()
			}
		}
		out = append(out, info)
	}
	return out
}

// publish refreshes the rates, what /status shows and the gauges.
func (l *loader) publish() {
	now := time.Now()
	l.mu.Lock()
	running := 0
	for _, j := range l.jobs {
		if j.State != loadReading {
			delete(l.rates, j.ID)
			continue
		}
		running = 1
		items, dropped := j.items()
		items += dropped
		r := l.rates[j.ID]
		if r == nil {
			l.rates[j.ID] = &loadRate{lastItems: items, lastRCU: j.ConsumedRCU, at: now}
			continue
		}
		if el := now.Sub(r.at).Seconds(); el >= 1 {
			// Smoothed over about five seconds.
			r.items = 0.8*r.items + 0.2*float64(items-r.lastItems)/el
			r.rcu = 0.8*r.rcu + 0.2*(j.ConsumedRCU-r.lastRCU)/el
			r.lastItems, r.lastRCU, r.at = items, j.ConsumedRCU, now
		}
	}
	infos := loadInfos(l.jobs, l.rates)
	l.mu.Unlock()
	l.s.m.snapRunning.Set(float64(running))
	l.s.m.snapSegments.Set(float64(l.inProgress.Load()))
	l.s.mu.Lock()
	l.s.loads = infos
	l.s.mu.Unlock()
}
