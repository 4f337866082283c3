package dynamodb

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// Lease rounds: every half lease duration each instance lists the stream's
// leases (one strongly consistent Query), learns the shards other
// instances found and finished, and moves toward its fair share of the
// active shards: the shards whose parent is finished divided by the live
// instances (those whose lease counters moved within a lease duration,
// and itself). It takes free leases first, then expired ones, up to its
// share; when none is left it steals one lease from the most loaded
// instance, provided that one holds at least two more than itself, and
// steals no other until that one is read. Shares so converge to differ by
// at most one.

// How a lease was taken.
const (
	takeFree    = "free"    // never leased, or released: read at once
	takeExpired = "expired" // its owner stopped renewing
	takeStolen  = "stolen"  // from a live owner holding more than its share
)

// discoveryClaim is the claim item that spaces full DescribeStream
// listings over all instances of a stream.
func (m *leaseManager) discoveryClaim() string { return m.scope + "/~discovery" }

// leaseRound lists the leases, merges them into the shard tree, registers
// shards the table lacks, and takes or steals toward this instance's share.
func (c *coordinator) leaseRound(ctx context.Context) error {
	s, m := c.s, c.s.lm
	lctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	items, err := m.table.List(lctx, m.scope)
	cancel()
	at := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.health.set("listing shard leases failing", err)
		s.log.Warn("listing shard leases failed; retrying", "err", err)
		return nil
	}
	leases := map[string]checkpoint.Lease{}
	prefix := m.scope + "/"
	for _, le := range items {
		id, ok := strings.CutPrefix(le.Key, prefix)
		if !ok || id == "" || strings.HasPrefix(id, "~") {
			continue
		}
		leases[id] = le
	}
	c.mergeLeases(leases)
	registered, err := c.registerMissing(ctx, leases)
	if err != nil {
		return err
	}
	for _, sh := range registered {
		leases[sh.id] = checkpoint.Lease{Key: sh.key, Parent: sh.parent}
	}
	m.observe(leases, at)
	if err := c.schedule(ctx); err != nil {
		return err
	}
	return c.balance(ctx, leases, at)
}

// observe records each lease's counter and since when it is unchanged.
func (m *leaseManager) observe(leases map[string]checkpoint.Lease, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]bool, len(leases))
	for _, le := range leases {
		seen[le.Key] = true
		if o, ok := m.observed[le.Key]; ok && o.counter == le.Counter && o.owner == le.Owner {
			continue
		}
		m.observed[le.Key] = observation{owner: le.Owner, counter: le.Counter, since: at}
	}
	for k := range m.observed {
		if !seen[k] {
			delete(m.observed, k)
		}
	}
	m.lastList = at
}

// mergeLeases adds the unfinished shards other instances registered,
// marks the shards they finished, and ends tenures whose lease shows
// another owner.
func (c *coordinator) mergeLeases(leases map[string]checkpoint.Lease) {
	s, m := c.s, c.s.lm
	me := m.table.Owner()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, le := range leases {
		finished := le.HasCheckpoint && le.Checkpoint.Position == FinishedPosition
		sh := s.shards[id]
		if sh == nil {
			if finished {
				continue
			}
			l, err := decodeLoaded(le.Key, le.Checkpoint, le.HasCheckpoint)
			if err != nil {
				s.log.Warn("a shard's checkpoint in the lease table is unreadable", "shard", id, "err", err)
				continue
			}
			sh = newShard(s.info.arn, id, le.Parent)
			sh.startFrom(l)
			s.shards[id] = sh
		}
		sh.owner = le.Owner
		if t := sh.tenure; t != nil {
			m.mu.Lock()
			if t.state != tenureEnded && le.Owner != me {
				s.m.leasesLost.Inc()
				m.endLocked(t, "the lease table shows another owner ("+le.Owner+")", nil)
			}
			m.mu.Unlock()
			continue
		}
		if finished && sh.state != stateFinished {
			sh.state = stateFinished
		}
	}
}

// registerMissing creates the lease items of the shards this instance knows
// from DescribeStream and the table lacks, parents before children, so
// that an instance that sees a child in the table also sees its parent.
func (c *coordinator) registerMissing(ctx context.Context, leases map[string]checkpoint.Lease) ([]*shard, error) {
	s, m := c.s, c.s.lm
	s.mu.Lock()
	var missing []*shard
	for id, sh := range s.shards {
		if _, ok := leases[id]; !ok && sh.state != stateFinished {
			missing = append(missing, sh)
		}
	}
	depth := func(sh *shard) int {
		d := 0
		for p := s.shards[sh.parent]; p != nil && d < 64; p = s.shards[p.parent] {
			d++
		}
		return d
	}
	slices.SortFunc(missing, func(a, b *shard) int {
		return cmp.Or(cmp.Compare(depth(a), depth(b)), strings.Compare(a.id, b.id))
	})
	s.mu.Unlock()
	for i, sh := range missing {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		err := m.table.Register(rctx, sh.key, sh.parent)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.health.set("registering shard leases failing", err)
			s.log.Warn("registering a shard in the lease table failed; retrying", "shard", sh.id, "err", err)
			return missing[:i], nil // children must not be registered before their parent
		}
	}
	return missing, nil
}

type leaseCandidate struct {
	id    string
	lease checkpoint.Lease
	since time.Time // its counter is unchanged since
}

// balance takes and steals leases toward this instance's fair share.
func (c *coordinator) balance(ctx context.Context, leases map[string]checkpoint.Lease, at time.Time) error {
	s, m := c.s, c.s.lm
	me := m.table.Owner()
	var free, expired []leaseCandidate
	loads := map[string][]leaseCandidate{}
	live := map[string]bool{me: true}
	active := 0
	s.mu.Lock()
	m.mu.Lock()
	for id, le := range leases {
		sh := s.shards[id]
		if sh == nil || !sh.ready || sh.state == stateFinished || (le.HasCheckpoint && le.Checkpoint.Position == FinishedPosition) {
			continue
		}
		active++
		if t := sh.tenure; t != nil && t.state != tenureEnded {
			continue
		}
		cd := leaseCandidate{id: id, lease: le, since: m.observed[le.Key].since}
		switch {
		case le.Owner == "":
			free = append(free, cd)
		case at.Sub(cd.since) >= m.d:
			expired = append(expired, cd)
		case le.Owner != me:
			live[le.Owner] = true
			loads[le.Owner] = append(loads[le.Owner], cd)
		}
		// A live lease of this instance without a tenure (a release
		// that failed) expires and is taken like any other.
	}
	held := len(m.tenures)
	stealing := false
	for _, t := range m.tenures {
		if t.how == takeStolen && at.Before(t.startAt) {
			stealing = true
		}
	}
	m.owners = len(live)
	m.mu.Unlock()
	s.mu.Unlock()

	target := (active + len(live) - 1) / len(live)
	rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	rand.Shuffle(len(expired), func(i, j int) { expired[i], expired[j] = expired[j], expired[i] })
	took := 0
	for i, cd := range append(free, expired...) {
		if held >= target {
			break
		}
		how := takeFree
		if i >= len(free) {
			how = takeExpired
		}
		ok, err := c.takeLease(ctx, cd, how)
		if err != nil {
			return err
		}
		if ok {
			held++
			took++
		}
	}
	if took > 0 || stealing {
		return nil
	}
	var victim string
	most := 0
	for o, cs := range loads {
		if len(cs) > most || (len(cs) == most && o < victim) {
			victim, most = o, len(cs)
		}
	}
	if victim == "" || most < held+2 {
		return nil
	}
	cs := loads[victim]
	_, err := c.takeLease(ctx, cs[rand.N(len(cs))], takeStolen)
	return err
}

// takeLease takes one lease and installs its tenure. It reports false when
// another instance changed the lease first.
func (c *coordinator) takeLease(ctx context.Context, cd leaseCandidate, how string) (bool, error) {
	s, m := c.s, c.s.lm
	sent := time.Now()
	tctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	le, err := m.table.Take(tctx, cd.lease, m.d)
	cancel()
	switch {
	case errors.Is(err, checkpoint.ErrLeaseChanged):
		return false, nil
	case err != nil:
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		s.health.set("taking shard leases failing", err)
		s.log.Warn("taking a shard lease failed", "shard", cd.id, "err", err)
		return false, nil
	}
	startAt := sent
	switch how {
	case takeExpired:
		// The previous owner's last renewal was sent before cd.since.
		if at := cd.since.Add(m.delay); at.After(sent) {
			startAt = at
		}
	case takeStolen:
		startAt = sent.Add(m.delay)
	}
	l, lerr := decodeLoaded(le.Key, le.Checkpoint, le.HasCheckpoint)

	s.mu.Lock()
	old := s.shards[cd.id]
	parent := le.Parent
	if old != nil && old.parent != "" {
		parent = old.parent
	}
	sh := newShard(s.info.arn, cd.id, parent)
	if old != nil {
		sh.closed, sh.listed, sh.ready = old.closed, old.listed, old.ready
	}
	sh.owner = m.table.Owner()
	if lerr == nil {
		sh.startFrom(l)
	}
	t := &tenure{sh: sh, how: how, startAt: startAt, lease: le, validTo: sent.Add(m.d)}
	sh.tenure = t
	finished := sh.state == stateFinished
	if !finished {
		sh.state = stateReading
	}
	s.shards[cd.id] = sh
	s.mu.Unlock()
	t.hold = m.gate.Hold("dynamodb shard "+cd.id, t.validTo, func() bool { return sh.tracker.Pending() > 0 })
	m.add(t, sent)

	if how == takeStolen {
		s.m.leasesStolen.Inc()
	} else {
		s.m.leasesTaken.Inc()
	}
	s.log.Info("shard lease taken", "shard", cd.id, "how", how, "previous_owner", cd.lease.Owner,
		"checkpoint", le.Checkpoint.Position, "reading_in", time.Until(startAt).Round(time.Millisecond).String())
	switch {
	case lerr != nil:
		s.log.Error("the shard's checkpoint is unreadable; giving the lease back", "shard", cd.id, "err", lerr)
		m.release(ctx, t, "unreadable checkpoint")
		s.mu.Lock()
		sh.state = stateWaiting
		s.mu.Unlock()
	case finished:
		m.release(ctx, t, "the shard was finished meanwhile")
	}
	return true, nil
}

// startDue starts the readers of held tenures whose start time came, and
// returns when the next one is due (zero when none waits).
func (c *coordinator) startDue(ctx context.Context) time.Time {
	s, m := c.s, c.s.lm
	now := time.Now()
	var next time.Time
	for _, t := range m.held() {
		m.mu.Lock()
		ok := t.state == tenureHeld && !t.running
		m.mu.Unlock()
		s.mu.Lock()
		finished := t.sh.state == stateFinished
		s.mu.Unlock()
		if !ok || finished {
			continue
		}
		if now.Before(t.startAt) {
			if next.IsZero() || t.startAt.Before(next) {
				next = t.startAt
			}
			continue
		}
		c.startTenure(ctx, t)
	}
	return next
}

// startTenure runs t's reader until the shard ends, the source stops, or
// the tenure lapses or ends. A lapsed tenure that is renewed again runs
// the same reader on from where it stopped.
func (c *coordinator) startTenure(ctx context.Context, t *tenure) {
	s, m := c.s, c.s.lm
	sh := t.sh
	rctx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	if t.state != tenureHeld || t.running {
		m.mu.Unlock()
		cancel()
		return
	}
	t.running, t.cancel, t.started = true, cancel, true
	if t.reader == nil {
		s.mu.Lock()
		start := sh.start
		s.mu.Unlock()
		t.reader = &reader{s: s, sh: sh, emit: c.emit, start: start, finished: c.finished}
	}
	r := t.reader
	m.mu.Unlock()
	c.g.Go(func() error {
		err := r.run(rctx)
		cancel()
		m.mu.Lock()
		t.running, t.cancel = false, nil
		m.mu.Unlock()
		m.notify()
		switch {
		case err == nil, ctx.Err() != nil:
			return err
		case errors.Is(err, errTenureEnded), errors.Is(err, checkpoint.ErrLeaseLost):
			m.mu.Lock()
			m.endLocked(t, "its checkpoint was refused", err)
			m.mu.Unlock()
			return nil
		case rctx.Err() != nil:
			return nil // the tenure lapsed or ended
		}
		return err
	})
}

// leaseChanged gives the shards of ended tenures back to the tree and
// starts the readers that may run.
func (c *coordinator) leaseChanged(ctx context.Context) time.Time {
	s, m := c.s, c.s.lm
	s.mu.Lock()
	for id, sh := range s.shards {
		t := sh.tenure
		if t == nil || sh.state == stateFinished {
			continue
		}
		m.mu.Lock()
		ended := t.state == tenureEnded
		m.mu.Unlock()
		if !ended {
			continue
		}
		fresh := newShard(s.info.arn, id, sh.parent)
		fresh.closed, fresh.listed, fresh.ready, fresh.loaded = sh.closed, sh.listed, sh.ready, true
		s.shards[id] = fresh
	}
	s.mu.Unlock()
	next := c.startDue(ctx)
	c.updateGauges()
	return next
}

// decodeLoaded validates a checkpoint read with a lease (as loadKey does).
func decodeLoaded(key string, c checkpoint.Checkpoint, found bool) (loaded, error) {
	if !found {
		return loaded{}, nil
	}
	return parseLoaded(key, c.Position, c.Data)
}
