package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/cdcbridge/cdcbridge/internal/fence"
)

// Shard leases (Config.Leases): several instances read one stream, each
// shard by one instance at a time, through one lease per shard kept in the
// checkpoint table (see checkpoint/dynamodb's lease.go for the item).
//
//   - A tenure is this instance's hold on one shard, from a successful take
//     to its loss, release or finish. Its reader runs only while the
//     tenure is held and renewed in time; each tenure starts with a fresh
//     ack tracker, so positions of an earlier tenure are never saved.
//   - Renewals run every third of the lease duration in their own
//     goroutine, apart from listing and reading, so that a slow DescribeStream
//     never delays them. A renewal that finds the lease changed means
//     another instance took it: the reader stops at once.
//   - Fencing: a tenure is certain until the send time of its last
//     successful renewal plus the lease duration (validTo); nobody can take
//     it before. When a renewal is overdue (less than a third of the
//     duration left) the reader stops (the tenure lapses), and the fence
//     gate stops the sink's sends of records of the shard at validTo: an
//     instance cut off from the table cannot send after its lease may have
//     moved. A renewal that still finds the lease unchanged revives the
//     tenure, which reads on from where it stopped.
//   - A new owner reads a lease it took over (expired or stolen) only after
//     the lease duration plus Config.SendTimeout from when the previous
//     owner last renewed at the latest, so even an owner that was not fenced
//     by a gate has finished its last send attempt.
//   - The records of an ended tenure still in the sink are sent until
//     validTo. If some are still there at validTo, the gate keeps them from
//     being sent, and they cannot be taken back: Run then fails with
//     fence.ErrFenced so that a restart continues from the checkpoints.
//   - Checkpoints of a tenure are written only while this instance owns
//     the lease (a conditional write); a refused checkpoint ends the tenure.
//
// Measured failover (cmd/cdcbridge multi_test.go, three processes under
// load): the shards of a killed process are read again about 20 s after
// the kill with the defaults (lease 10 s, Kinesis request timeout 10 s),
// 3 to 4 s with 2 s and 1 s; those of a process cut off from DynamoDB and
// Kinesis, 3 to 4 s after the cut with 2 s and 1 s. A graceful stop hands
// its leases over at once. A newcomer steals one lease per lease duration
// plus request timeout until the shares differ by at most one.

type tenureState int

const (
	tenureHeld   tenureState = iota // renewed in time: its reader may run
	tenureLapsed                    // renewals overdue: reading paused until a renewal succeeds
	tenureEnded                     // lost, released or finished
)

func (st tenureState) String() string {
	switch st {
	case tenureHeld:
		return "held"
	case tenureLapsed:
		return "lapsed"
	}
	return "ended"
}

// LeaseStore is what the source needs of a store whose leases instances
// share (checkpoint/dynamodb's Leases): listing a scope's leases,
// registering a new key, taking, renewing and releasing a lease, saving a
// checkpoint only while holding its lease, and claiming a periodic task.
type LeaseStore interface {
	Owner() string
	List(ctx context.Context, scope string) ([]checkpoint.Lease, error)
	Register(ctx context.Context, key, parent string) error
	Take(ctx context.Context, seen checkpoint.Lease, d time.Duration) (checkpoint.Lease, error)
	Renew(ctx context.Context, held checkpoint.Lease, d time.Duration) (checkpoint.Lease, error)
	Release(ctx context.Context, held checkpoint.Lease) error
	Save(ctx context.Context, held checkpoint.Lease, c checkpoint.Checkpoint) error
	Claim(ctx context.Context, key string, every time.Duration) (bool, error)
}

// tenure is this instance's hold on one shard's lease.
type tenure struct {
	sh      *shard
	how     string    // how it was taken: free, expired or stolen
	startAt time.Time // reading starts no earlier
	hold    *fence.Hold

	opMu sync.Mutex // serialises renewals and the release

	// Guarded by leaseManager.mu.
	lease       checkpoint.Lease
	state       tenureState
	validTo     time.Time
	lastAttempt time.Time // send time of the last renewal attempt
	renewing    bool
	running     bool // a reader goroutine runs
	cancel      context.CancelFunc
	reader      *reader
	started     bool // reading began at least once
}

// leaseManager keeps this instance's tenures.
type leaseManager struct {
	s     *Source
	table LeaseStore
	d     time.Duration // lease duration
	delay time.Duration // wait before reading a lease taken over: d + SendTimeout
	gate  *fence.Gate
	scope string // the stream's checkpoint scope

	signal chan struct{} // a tenure changed state (capacity 1)

	mu       sync.Mutex
	tenures  map[string]*tenure // held or lapsed, by shard id
	draining []*tenure          // ended, with records still in the sink
	observed map[string]observation
	owners   int       // live owners at the last round, for status
	lastList time.Time // when the leases were last listed
	renewWG  sync.WaitGroup
}

// observation is a lease's counter as this instance saw it, and since when
// (the receive time of the first listing that showed it).
type observation struct {
	owner   string
	counter int64
	since   time.Time
}

func newLeaseManager(s *Source) *leaseManager {
	c := s.cfg
	return &leaseManager{
		s: s, table: c.Leases, d: c.LeaseDuration, delay: c.LeaseDuration + c.SendTimeout, gate: c.Fence,
		signal: make(chan struct{}, 1), tenures: map[string]*tenure{}, observed: map[string]observation{},
	}
}

func (m *leaseManager) notify() {
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// keep renews the tenures, pauses those whose renewals are overdue, and
// watches the records of ended tenures until ctx ends. It returns
// fence.ErrFenced (wrapped) when such records got stuck: they must never be
// delivered now, and only a restart clears them from the sink.
func (m *leaseManager) keep(ctx context.Context) error {
	defer m.renewWG.Wait()
	t := time.NewTicker(max(m.d/12, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		m.renewDue(ctx)
		m.lapseDue()
		if err := m.checkDraining(); err != nil {
			return err
		}
		m.updateGauges()
	}
}

// renewDue starts a renewal of each tenure whose last attempt is a third
// of the lease duration old.
func (m *leaseManager) renewDue(ctx context.Context) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tenures {
		if t.renewing || now.Sub(t.lastAttempt) < m.d/3 {
			continue
		}
		t.renewing = true
		t.lastAttempt = now
		m.renewWG.Go(func() { m.renew(ctx, t) })
	}
}

func (m *leaseManager) renew(ctx context.Context, t *tenure) {
	t.opMu.Lock()
	defer t.opMu.Unlock()
	m.mu.Lock()
	le, state := t.lease, t.state
	m.mu.Unlock()
	if state == tenureEnded {
		m.mu.Lock()
		t.renewing = false
		m.mu.Unlock()
		return
	}
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, max(m.d/3, time.Second))
	next, err := m.table.Renew(rctx, le, m.d)
	cancel()

	m.mu.Lock()
	defer m.mu.Unlock()
	t.renewing = false
	switch {
	case err == nil:
		t.lease = next
		if t.state == tenureEnded {
			return
		}
		t.validTo = sent.Add(m.d)
		t.hold.Extend(t.validTo)
		if t.state == tenureLapsed {
			t.state = tenureHeld
			m.s.log.Info("lease renewed again: reading the shard on", "shard", t.sh.id)
			m.notify()
		}
	case errors.Is(err, checkpoint.ErrLeaseLost):
		m.s.m.leasesLost.Inc()
		m.endLocked(t, "another instance took the lease over", err)
	case ctx.Err() != nil:
	default:
		m.s.m.leaseRenewErrors.Inc()
		m.s.health.set("lease renewals failing", err)
		m.s.log.Warn("renewing a shard lease failed", "shard", t.sh.id, "valid_for", time.Until(t.validTo).Round(time.Millisecond).String(), "err", err)
	}
}

// lapseDue pauses the readers of tenures whose renewal is overdue: less than
// a third of the lease duration is left before another instance may take
// the lease.
func (m *leaseManager) lapseDue() {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tenures {
		if t.state != tenureHeld || now.Before(t.validTo.Add(-m.d/3)) {
			continue
		}
		t.state = tenureLapsed
		if t.cancel != nil {
			t.cancel()
		}
		m.s.health.set("shard leases lapsed: renewals overdue, reading paused", nil)
		m.s.log.Warn("lease renewal overdue: stopped reading the shard; sends of its records stop when the lease runs out",
			"shard", t.sh.id, "lease_runs_out_in", t.validTo.Sub(now).Round(time.Millisecond).String())
		m.notify()
	}
}

// endLocked ends t: its reader stops, it is no longer renewed, and its
// records still in the sink are watched until they are accepted. Called
// with m.mu held.
func (m *leaseManager) endLocked(t *tenure, why string, cause error) {
	if t.state == tenureEnded {
		return
	}
	t.state = tenureEnded
	if t.cancel != nil {
		t.cancel()
	}
	if m.tenures[t.sh.id] == t {
		delete(m.tenures, t.sh.id)
	}
	m.draining = append(m.draining, t)
	if cause != nil {
		m.s.log.Warn("shard lease ended: stopped reading the shard", "shard", t.sh.id, "why", why, "err", cause)
	} else {
		m.s.log.Info("shard lease ended", "shard", t.sh.id, "why", why)
	}
	m.notify()
}

// checkDraining forgets ended tenures whose records were all accepted, and
// fails when records of one got stuck past its lease.
func (m *leaseManager) checkDraining() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.draining[:0]
	var stuck []string
	for _, t := range m.draining {
		switch {
		case t.sh.tracker.Pending() == 0:
			t.hold.Close()
		case t.hold.Stuck():
			stuck = append(stuck, t.sh.id)
			kept = append(kept, t)
		default:
			kept = append(kept, t)
		}
	}
	clear(m.draining[len(kept):])
	m.draining = kept
	if len(stuck) > 0 && m.gate != nil {
		return fmt.Errorf("dynamodb source: shards %v: their leases moved to another instance while some of their records were still waiting for Kinesis; "+
			"those must not be sent any more, so this instance stops (a restart continues from the checkpoints): "+
			"records of a shard whose lease moved to another instance are stuck in the sink: %w", stuck, fence.ErrFenced)
	}
	return nil
}

// add registers a new tenure. Its first renewal follows a third of the
// lease duration after the take.
func (m *leaseManager) add(t *tenure, taken time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t.lastAttempt = taken
	m.tenures[t.sh.id] = t
}

// save writes a tenure's checkpoint as the lease's owner. A refusal
// because another instance owns the lease ends the tenure and returns an
// error wrapping checkpoint.ErrLeaseLost (not checkpoint.ErrStale: losing a
// lease is not a reason to stop the source).
func (m *leaseManager) save(ctx context.Context, t *tenure, c checkpoint.Checkpoint) error {
	m.mu.Lock()
	le, state := t.lease, t.state
	m.mu.Unlock()
	if state == tenureEnded {
		return fmt.Errorf("shard %s: %w", t.sh.id, errTenureEnded)
	}
	err := m.table.Save(ctx, le, c)
	if errors.Is(err, checkpoint.ErrLeaseLost) {
		m.mu.Lock()
		m.s.m.leasesLost.Inc()
		m.endLocked(t, "its checkpoint was refused: another instance owns the lease", err)
		m.mu.Unlock()
		return fmt.Errorf("shard %s: %w", t.sh.id, errTenureEnded)
	}
	return err
}

// errTenureEnded: the shard is no longer this instance's; its progress is
// not saved (the new owner reads again from the last checkpoint).
var errTenureEnded = errors.New("the shard's lease is no longer held")

// release gives a tenure's lease back (after its finish checkpoint, or on
// shutdown once its checkpoint covers everything it read), so that
// another instance may take it at once.
func (m *leaseManager) release(ctx context.Context, t *tenure, why string) {
	t.opMu.Lock()
	defer t.opMu.Unlock()
	m.mu.Lock()
	le, state := t.lease, t.state
	if state != tenureEnded {
		t.state = tenureEnded
		if m.tenures[t.sh.id] == t {
			delete(m.tenures, t.sh.id)
		}
	}
	m.mu.Unlock()
	if state == tenureEnded {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, m.s.cfg.RequestTimeout)
	err := m.table.Release(rctx, le)
	cancel()
	if err != nil {
		// It expires instead: another instance takes it a lease
		// duration later.
		m.s.log.Warn("releasing a shard lease failed; it will expire", "shard", t.sh.id, "err", err)
	} else {
		m.s.m.leasesReleased.Inc()
		m.s.log.Info("shard lease released", "shard", t.sh.id, "why", why)
	}
	m.mu.Lock()
	m.draining = append(m.draining, t)
	m.mu.Unlock()
	m.notify()
}

// releaseAll hands back, on shutdown, every lease whose shard was read and
// whose checkpoint covers everything read: another instance continues at
// once. Others (records unacknowledged, a checkpoint not saved, reading not
// started because an earlier owner may still be sending) expire instead.
func (m *leaseManager) releaseAll(ctx context.Context) {
	m.mu.Lock()
	var ts []*tenure
	for _, t := range m.tenures {
		if t.state == tenureHeld && t.started {
			ts = append(ts, t)
		}
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range ts {
		sh := t.sh
		if !sh.tracker.Idle() {
			continue
		}
		if w, ok := sh.tracker.Watermark(); ok {
			sh.saveMu.Lock()
			saved := sh.saved
			sh.saveMu.Unlock()
			if w > saved {
				continue
			}
		}
		wg.Go(func() { m.release(ctx, t, "shutting down") })
	}
	wg.Wait()
}

// held returns the tenures (held or lapsed).
func (m *leaseManager) held() []*tenure {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*tenure, 0, len(m.tenures))
	for _, t := range m.tenures {
		out = append(out, t)
	}
	return out
}

func (m *leaseManager) updateGauges() {
	m.mu.Lock()
	n := len(m.tenures)
	m.mu.Unlock()
	m.s.m.leasesHeld.Set(float64(n))
}

// LeaseStatus is the lease part of Status.
type LeaseStatus struct {
	Owner         string    `json:"owner"`
	Held          int       `json:"held"`
	Lapsed        int       `json:"lapsed"`
	Starting      int       `json:"starting"` // taken, not read yet (a stolen one waits for the previous owner's lease to run out)
	Draining      int       `json:"draining"` // ended, records still in flight
	LiveOwners    int       `json:"live_owners"`
	DurationSecs  float64   `json:"lease_duration_seconds"`
	LastListed    time.Time `json:"last_listed,omitzero"`
	FencedSending []string  `json:"fenced,omitempty"` // shards whose records may not be sent now
}

func (m *leaseManager) status() *LeaseStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := &LeaseStatus{Owner: m.table.Owner(), LiveOwners: m.owners, DurationSecs: m.d.Seconds(), LastListed: m.lastList,
		Draining: len(m.draining)}
	for _, t := range m.tenures {
		switch {
		case t.state == tenureLapsed:
			st.Lapsed++
		case !t.started:
			// Until its reader runs, a shutdown lets the lease expire
			// rather than hand it back (see releaseAll).
			st.Starting++
		default:
			st.Held++
		}
	}
	st.FencedSending = m.gate.Blocked()
	return st
}

// tenureStatus describes sh's lease for ShardStatus ("" when not leased
// by this instance).
func (m *leaseManager) tenureStatus(sh *shard) string {
	t := sh.tenure
	if t == nil {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t.state == tenureHeld && time.Now().Before(t.startAt) {
		return "starting"
	}
	return t.state.String()
}
