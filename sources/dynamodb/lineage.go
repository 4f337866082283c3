package dynamodb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"golang.org/x/sync/errgroup"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// coordinator owns the shard tree: it lists shards, decides which may be
// read (a child only once its parent is finished), and starts one reader
// per shard. Shard states change only in its goroutine.
type coordinator struct {
	s    *Source
	emit cdc.Emit
	g    *errgroup.Group

	finished chan *shard // readers report shards read to their end

	parents       map[string]loaded // checkpoints of parents that left the stream
	noChildFilter bool              // the API refused the child-shard filter
	lastPrune     time.Time
}

func newCoordinator(s *Source, emit cdc.Emit, g *errgroup.Group) *coordinator {
	return &coordinator{s: s, emit: emit, g: g, finished: make(chan *shard), parents: map[string]loaded{}}
}

// soonAfterFinish is how soon a full listing follows a shard's end when the
// child-shard filter found no children: AWS creates them around the time
// the parent closes.
const soonAfterFinish = 2 * time.Second

func (c *coordinator) run(ctx context.Context) error {
	s := c.s
	fresh, err := c.firstStart(ctx)
	if err != nil {
		return err
	}
	l, err := s.describe(ctx, "")
	if err != nil {
		return c.describeFailed(err)
	}
	if err := c.merge(ctx, l); err != nil {
		return err
	}
	if fresh {
		if err := c.applyStart(ctx); err != nil {
			return err
		}
	}
	s.ready.Store(true)
	s.log.Info("reading DynamoDB stream", "stream", s.info.arn, "table", s.info.table,
		"view_type", s.info.viewType, "status", l.status, "shards", len(l.shards), "first_start", fresh,
		"leases", s.lm != nil)
	if err := c.schedule(ctx); err != nil {
		return err
	}
	c.prune(ctx, l)

	discover := time.NewTimer(jitter(s.cfg.DiscoverInterval))
	defer discover.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// With leases: lease rounds, reader starts of leases taken over, and
	// tenure changes reported by the renewals. Without, these never fire.
	leaseRound := time.NewTimer(0)
	defer leaseRound.Stop()
	startTimer := time.NewTimer(time.Hour)
	defer startTimer.Stop()
	var leaseSignal <-chan struct{}
	if s.lm == nil {
		leaseRound.Stop()
	} else {
		leaseSignal = s.lm.signal
	}
	resetStart := func(next time.Time) {
		if !next.IsZero() {
			startTimer.Reset(max(time.Until(next), 0))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			s.heartbeat()
			c.updateGauges()
		case <-leaseRound.C:
			if err := c.leaseRound(ctx); err != nil {
				return err
			}
			resetStart(c.startDue(ctx))
			c.updateGauges()
			leaseRound.Reset(jitter(s.lm.d / 2))
		case <-startTimer.C:
			resetStart(c.startDue(ctx))
		case <-leaseSignal:
			resetStart(c.leaseChanged(ctx))
		case sh := <-c.finished:
			s.mu.Lock()
			sh.state = stateFinished
			s.mu.Unlock()
			if sh.tenure != nil {
				s.lm.release(ctx, sh.tenure, "the shard was read to its end")
				// Its children may be leased now: look at once.
				leaseRound.Reset(0)
			}
			c.updateGauges()
			found := c.knownChildren(sh.id)
			if !found {
				var err error
				if found, err = c.findChildren(ctx, sh); err != nil {
					return err
				}
			}
			if err := c.schedule(ctx); err != nil {
				return err
			}
			if !found {
				discover.Reset(min(soonAfterFinish, s.cfg.DiscoverInterval))
			}
		case <-discover.C:
			if s.lm != nil {
				// One instance of all lists the stream per interval;
				// the others learn new shards from the lease table.
				cctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
				ok, err := s.lm.table.Claim(cctx, s.lm.discoveryClaim(), s.cfg.DiscoverInterval*4/5)
				cancel()
				if err != nil || !ok {
					if err != nil && ctx.Err() == nil {
						s.log.Warn("claiming the stream's shard listing failed", "err", err)
					}
					discover.Reset(jitter(s.cfg.DiscoverInterval))
					continue
				}
			}
			l, err := s.describe(ctx, "")
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return ctx.Err()
			case classify(ctx, err) == classNotFound:
				return s.streamGoneError(err)
			default:
				s.health.set("listing shards failing", err)
				s.log.Warn("listing the stream's shards failed; retrying", "err", err)
				discover.Reset(jitter(s.cfg.DiscoverInterval))
				continue
			}
			if err := c.merge(ctx, l); err != nil {
				return err
			}
			if err := c.schedule(ctx); err != nil {
				return err
			}
			if err := c.checkDisabled(l); err != nil {
				return err
			}
			c.prune(ctx, l)
			discover.Reset(jitter(s.cfg.DiscoverInterval))
		}
	}
}

func (c *coordinator) describeFailed(err error) error {
	if classify(context.Background(), err) == classNotFound {
		return c.s.streamGoneError(err)
	}
	return fmt.Errorf("dynamodb source: listing the shards of %s: %w", c.s.info.arn, err)
}

// firstStart reports whether the stream was never started with this store.
func (c *coordinator) firstStart(ctx context.Context) (bool, error) {
	key := streamScope(c.s.info.arn)
	_, err := c.s.store.Load(ctx, key)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("dynamodb source: loading checkpoint %s: %w", key, err)
	}
	return false, nil
}

// applyStart handles the shards of a stream's first start. With
// start=latest, closed shards are marked finished unread and open shards
// start at LATEST; both are saved before anything is read so that a
// restart neither reads what was skipped nor skips what came since. The
// stream's marker is saved last.
func (c *coordinator) applyStart(ctx context.Context) error {
	s := c.s
	now := time.Now().UTC().Truncate(time.Millisecond)
	if s.cfg.Start == StartLatest {
		s.mu.Lock()
		var pending []*shard
		for _, sh := range s.shards {
			if sh.loaded && sh.state != stateFinished && !sh.hadCheckpoint {
				pending = append(pending, sh)
			}
		}
		s.mu.Unlock()
		for _, sh := range pending {
			s.mu.Lock()
			closed := sh.closed
			s.mu.Unlock()
			if closed {
				if err := s.saveFinished(ctx, sh, ckptData{Skipped: true}); err != nil {
					return fmt.Errorf("dynamodb source: %w", err)
				}
				s.mu.Lock()
				sh.state = stateFinished
				s.mu.Unlock()
				continue
			}
			d := ckptData{LatestAt: now, Parent: sh.parent}
			if err := s.store.Save(ctx, sh.key, checkpoint.Checkpoint{Position: "", Data: d.encode()}); err != nil {
				return fmt.Errorf("dynamodb source: saving the start of shard %s: %w", sh.id, err)
			}
			s.mu.Lock()
			sh.start.latest, sh.start.latestAt = true, now
			s.mu.Unlock()
		}
	}
	if s.loader != nil && s.cfg.Snapshot == SnapshotInitial {
		// Kept before the marker: a crash before the marker starts again as
		// a first start, which finds the job already there.
		if err := s.loader.addInitial(ctx); err != nil {
			return err
		}
	}
	m := streamMarker{Start: s.cfg.Start, StartedAt: now}
	b, _ := json.Marshal(m)
	if err := s.store.Save(ctx, streamScope(s.info.arn), checkpoint.Checkpoint{Position: markerPosition, Data: b}); err != nil {
		return fmt.Errorf("dynamodb source: saving the stream's start: %w", err)
	}
	return nil
}

// merge adds the shards of l to the tree and loads the checkpoints of new
// ones. A full listing also records which shards are still in the stream
// and the stream's view type and key schema.
func (c *coordinator) merge(ctx context.Context, l *listing) error {
	s := c.s
	now := time.Now()
	s.mu.Lock()
	if l.full {
		s.streamStatus = string(l.status)
		s.lastDiscovery = now
		s.lastListing = l.asked
		if s.info.viewType == "" && l.viewType != "" {
			s.info.viewType = string(l.viewType)
			s.logViewType()
		}
		if l.hashKey != "" {
			s.info.hashKey, s.info.rangeKey = l.hashKey, l.rangeKey
		}
		for _, sh := range s.shards {
			sh.listed = false
		}
	}
	var fresh []*shard
	for _, d := range l.shards {
		id := aws.ToString(d.ShardId)
		if id == "" {
			continue
		}
		sh, ok := s.shards[id]
		if !ok {
			sh = newShard(s.info.arn, id, aws.ToString(d.ParentShardId))
			s.shards[id] = sh
			fresh = append(fresh, sh)
		}
		if d.SequenceNumberRange != nil && d.SequenceNumberRange.EndingSequenceNumber != nil {
			sh.closed = true
		}
		if l.full {
			sh.listed = true
		}
	}
	if l.full {
		// Finished shards that left the stream are only remembered by
		// their checkpoint (a child that asks finds it there).
		for id, sh := range s.shards {
			if !sh.listed && sh.state == stateFinished {
				delete(s.shards, id)
			}
		}
	}
	s.mu.Unlock()
	if l.full {
		s.m.discoveries.Inc()
	}
	return c.load(ctx, fresh)
}

// load reads the checkpoints of new shards in parallel. A shard whose
// checkpoint cannot be loaded stays waiting and is tried again later.
func (c *coordinator) load(ctx context.Context, shards []*shard) error {
	s := c.s
	results := make([]loaded, len(shards))
	errs := make([]error, len(shards))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(saveConcurrency)
	for i, sh := range shards {
		g.Go(func() error {
			results[i], errs[i] = s.loadKey(gctx, sh.key)
			return nil
		})
	}
	_ = g.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, sh := range shards {
		if errs[i] != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.health.set("loading checkpoints failing", errs[i])
			s.log.Warn("loading a shard's checkpoint failed; retrying", "shard", sh.id, "err", errs[i])
			continue
		}
		sh.startFrom(results[i])
	}
	return nil
}

// knownChildren reports whether a shard of the tree has parent as its
// parent.
func (c *coordinator) knownChildren(parent string) bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for _, sh := range c.s.shards {
		if sh.parent == parent {
			return true
		}
	}
	return false
}

// findChildren looks for the children of a shard that just finished with
// the child-shard filter (one call). It reports whether any was found.
func (c *coordinator) findChildren(ctx context.Context, parent *shard) (bool, error) {
	if c.noChildFilter {
		return false, nil
	}
	l, err := c.s.describe(ctx, parent.id)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return false, ctx.Err()
	case classify(ctx, err) == classNotFound:
		return false, c.s.streamGoneError(err)
	default:
		// Older endpoints and emulators may refuse the filter: fall back
		// to full listings for good.
		c.noChildFilter = true
		c.s.log.Info("the child-shard filter of DescribeStream is not available; using full listings", "err", err)
		return false, nil
	}
	found := false
	for _, sh := range l.shards {
		if aws.ToString(sh.ParentShardId) == parent.id {
			found = true
		}
	}
	return found, c.merge(ctx, l)
}

// schedule starts a reader for every waiting shard that may be read:
// loaded, not finished, and whose parent is finished or gone. It repeats
// until nothing changes, since marking one shard finished (a trimmed
// parent) can release another.
func (c *coordinator) schedule(ctx context.Context) error {
	s := c.s
	for {
		s.mu.Lock()
		var waiting []*shard
		var unloaded []*shard
		for _, sh := range s.shards {
			switch {
			case sh.state != stateWaiting:
			case !sh.loaded:
				unloaded = append(unloaded, sh)
			default:
				waiting = append(waiting, sh)
			}
		}
		s.mu.Unlock()
		if len(unloaded) > 0 {
			if err := c.load(ctx, unloaded); err != nil {
				return err
			}
		}
		slices.SortFunc(waiting, func(a, b *shard) int { return strings.Compare(a.id, b.id) })
		changed := false
		for _, sh := range waiting {
			ok, err := c.parentDone(ctx, sh)
			if err != nil {
				return err
			}
			switch {
			case ok && s.lm != nil:
				// Leasable: the lease rounds decide who reads it.
				s.mu.Lock()
				sh.ready = true
				s.mu.Unlock()
			case ok:
				c.startReader(ctx, sh)
				changed = true
			}
		}
		c.updateGauges()
		if !changed {
			return nil
		}
	}
}

// parentDone reports whether sh's parent no longer holds sh back.
func (c *coordinator) parentDone(ctx context.Context, sh *shard) (bool, error) {
	s := c.s
	if sh.parent == "" {
		return true, nil
	}
	s.mu.Lock()
	p, ok := s.shards[sh.parent]
	var pstate shardState
	if ok {
		pstate = p.state
	}
	s.mu.Unlock()
	if ok {
		return pstate == stateFinished, nil
	}
	// The parent is not in the stream any more. Its checkpoint tells
	// whether it was read to its end; without one it aged out before this
	// bridge knew it (or its finished checkpoint was already pruned).
	pl, seen := c.parents[sh.parent]
	if !seen {
		var err error
		pl, err = s.loadKey(ctx, shardKey(s.info.arn, sh.parent))
		if err != nil {
			s.health.set("loading checkpoints failing", err)
			s.log.Warn("loading the checkpoint of a parent shard failed; retrying", "shard", sh.parent, "err", err)
			return false, nil
		}
		c.parents[sh.parent] = pl
	}
	if !pl.found || pl.finished() {
		return true, nil
	}
	// The parent was being read when it left the stream: its records
	// after the checkpoint expired unread.
	gone := newShard(s.info.arn, sh.parent, "")
	if err := c.s.trimmed(ctx, gone, pl.position, "the shard left the stream before it was read to its end"); err != nil {
		return false, err
	}
	if err := s.saveFinished(ctx, gone, ckptData{Trimmed: true, LastSequence: pl.position}); err != nil {
		return false, fmt.Errorf("dynamodb source: %w", err)
	}
	c.parents[sh.parent] = loaded{found: true, position: FinishedPosition}
	return true, nil
}

func (c *coordinator) startReader(ctx context.Context, sh *shard) {
	s := c.s
	s.mu.Lock()
	sh.state = stateReading
	start := sh.start
	s.mu.Unlock()
	r := &reader{s: s, sh: sh, emit: c.emit, start: start, finished: c.finished}
	c.g.Go(func() error { return r.run(ctx) })
}

// checkDisabled ends the source once a disabled stream was read to its end.
func (c *coordinator) checkDisabled(l *listing) error {
	if l.status != types.StreamStatusDisabled {
		return nil
	}
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sh := range s.shards {
		if sh.state != stateFinished {
			return nil
		}
	}
	return fmt.Errorf("dynamodb source: stream %s was disabled and every record it held was delivered; "+
		"enable a stream on the table and restart to capture further changes: %w", s.info.arn, ErrStreamGone)
}

func (c *coordinator) updateGauges() {
	s := c.s
	var counts [4]int
	s.mu.Lock()
	for _, sh := range s.shards {
		counts[sh.gaugeState()]++
	}
	s.mu.Unlock()
	for st, n := range counts {
		s.m.shards.WithLabelValues(shardState(st).String()).Set(float64(n))
	}
}

// pruneEvery spaces the pruning of old checkpoints.
const pruneEvery = time.Hour

func (c *coordinator) prune(ctx context.Context, l *listing) {
	if time.Since(c.lastPrune) < pruneEvery {
		return
	}
	c.lastPrune = time.Now()
	listed := make(map[string]bool, len(l.shards))
	for _, sh := range l.shards {
		listed[aws.ToString(sh.ShardId)] = true
	}
	c.s.prune(ctx, listed)
}
