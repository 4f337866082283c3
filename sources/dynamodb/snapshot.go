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
// holds up to three 1 MB pages in memory (read, read ahead, held).
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
	pubSeq  uint64     // publishes, so that a late one does not undo a newer one
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
		l.fail(job, "the table does not exist")
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
		l.fail(job, msg)
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
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() { defer close(watched); l.watch(ctx, stopWatch) }()
	err = g.Wait()
	close(stopWatch)
	<-watched
	var se *scanError
	if errors.As(err, &se) && ctx.Err() == nil {
		l.fail(job, se.Error())
		return l.saveRetrying(ctx)
	}
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

func (l *loader) fail(job *loadJob, why string) {
	l.s.log.Error("snapshot: load failed", "id", job.ID, "table", job.Table, "reason", why)
	l.update(func() { job.State, job.Note, job.Finished = loadFailed, why, nowText() })
}

// watch runs beside a job's segments: it drops the stream's noted keys
// that no page in flight needs, refreshes the status, and takes requests
// (a cancel of the job among them).
func (l *loader) watch(ctx context.Context, stop chan struct{}) {
	t := time.NewTicker(min(time.Second, l.s.cfg.RequestPoll))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
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
		if err := l.s.takeRequests(ctx, l); err != nil && ctx.Err() == nil {
			l.s.log.Warn("snapshot: taking requests failed; trying again", "err", err)
		}
		l.publish()
	}
}
