package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Source captures committed changes of a PostgreSQL database through
// logical replication. See the package documentation for its guarantees.
type Source struct {
	cfg   Config
	store checkpoint.Store
	log   *slog.Logger
	m     *metrics
	types *typeCache

	ready  atomic.Bool
	pos    atomic.Pointer[positions] // the current session's
	leader atomic.Pointer[lease]     // the lock while held

	mu       sync.Mutex
	role     string
	degraded map[string]bool // reason -> sticky (kept across recoveries)
	slotLag  int64
	lagKnown bool
	snaps    []SnapshotInfo // the session's snapshot jobs, for Status
	pubs     []string
	server   serverStatus
}

// New validates cfg and allocates a Source; it starts nothing. reg may be
// nil (metrics are then not registered); log may be nil.
func New(cfg Config, store checkpoint.Store, reg prometheus.Registerer, log *slog.Logger) (*Source, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("postgres: a checkpoint store is required")
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Heartbeat == nil {
		cfg.Heartbeat = func() {}
	}
	return &Source{
		cfg: cfg, store: store, m: newMetrics(reg), types: newTypeCache(),
		log:      log.With("source", "postgres", "slot", cfg.Slot),
		degraded: make(map[string]bool),
	}, nil
}

func (s *Source) heartbeat() { s.cfg.Heartbeat() }

// fatalError marks errors a reconnect cannot fix (configuration,
// privileges, a lost slot with on-slot-lost=fail).
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func fatal(err error) error { return &fatalError{err} }

func isFatal(err error) bool {
	var f *fatalError
	if errors.As(err, &f) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42501", // insufficient_privilege
			"28000", "28P01", // invalid authorization, bad password
			"3D000": // database does not exist
			return true
		}
	}
	return false
}

// Run captures changes and passes them to emit until ctx ends. It waits as
// a standby while another instance holds the slot, takes over when that
// one's session ends, creates the publication and slot as needed, reads
// the initial snapshot, streams, and reconnects after errors. It returns
// nil when ctx ends (after saving the final checkpoint), or a fatal error.
func (s *Source) Run(ctx context.Context, emit cdc.Emit) error {
	defer s.setRole("stopped")
	for {
		s.setRole("standby")
		l, err := s.acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.leader.Store(l)
		if l.waited {
			err = s.awaitTakeover(l.ctx, l)
		}
		if err == nil {
			s.setRole("active")
			s.log.Info("active: holding the slot's lock")
			err = s.runActive(l.ctx, emit)
		}
		cause := context.Cause(l.ctx)
		l.release()
		s.leader.Store(nil)
		// Events of the ended sessions are re-sent by whoever streams
		// next; they no longer count as this instance's lag.
		s.pos.Store(nil)
		switch {
		case ctx.Err() != nil:
			l.endHold()
			return nil
		case errors.Is(cause, errLeadershipLost):
			s.degrade("lost the slot's lock connection")
			s.m.reconnects.Inc()
			if err := s.drainLost(ctx, l); err != nil {
				return err
			}
			continue
		case err != nil:
			l.endHold()
			return err
		}
		l.endHold()
	}
}

// runActive does the work of the lock holder until ctx ends or a fatal
// error occurs; other errors lead to a new session after a backoff.
func (s *Source) runActive(ctx context.Context, emit cdc.Emit) error {
	bo := newBackoff()
	for {
		start := time.Now()
		err := s.activeSession(ctx, emit)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if isFatal(err) {
			s.degrade(err.Error())
			return err
		}
		if time.Since(start) > time.Minute {
			bo.Reset()
		}
		s.m.reconnects.Inc()
		s.degrade("source disconnected")
		s.log.Warn("replication session ended; reconnecting", "err", err)
		if err := wait(ctx, bo.Next(), s.heartbeat); err != nil {
			return err
		}
	}
}

// activeSession connects, checks the server, sets up the publication and
// slot (and snapshot), and streams until an error.
func (s *Source) activeSession(ctx context.Context, emit cdc.Emit) error {
	pool, err := newPool(ctx, s.cfg.URL)
	if err != nil {
		return err
	}
	// Closing waits up to 15 s per connection for the server to see it go,
	// which a silent network never lets happen: the next session need not
	// wait for that.
	defer func() { go pool.Close() }()
	srv, err := inspectServer(ctx, pool)
	if err != nil {
		return err
	}
	if err := srv.requireReady(); err != nil {
		return fatal(err)
	}
	conn, err := connectReplication(ctx, s.cfg.URL)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	s.ready.Store(true)
	ident, err := identify(ctx, conn)
	if err != nil {
		return err
	}
	s.noteServer(srv, ident)
	failover, unprotected, err := wantFailover(s.cfg.Failover, srv)
	if err != nil {
		return fatal(err)
	}

	pubs, managed, err := s.ensurePublication(ctx, pool)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.pubs = pubs
	s.mu.Unlock()

	st := &stateStore{store: s.store, key: stateKey(ident.sysID, ident.database, s.cfg.Slot)}
	source := "/cdcbridge/postgres/" + ident.sysID + "/" + ident.database + "/" + s.cfg.Slot

	aux, stopAux := context.WithCancel(ctx)
	var auxWG sync.WaitGroup
	defer func() { stopAux(); auxWG.Wait() }()
	auxWG.Go(func() { s.pollSlotLag(aux, pool) })
	if managed {
		auxWG.Go(func() { s.syncPublications(aux, pool) })
	}

	plan, err := s.prepareSlot(ctx, slotSetup{conn: conn, pool: pool, st: st, srv: srv, ident: ident,
		source: source, pubs: pubs, emit: emit, failover: failover})
	if err != nil {
		return err
	}
	if err := s.noteEndpoint(ctx, ident); err != nil {
		return err
	}
	s.clearDegraded()
	if unprotected != "" {
		s.log.Warn(unprotected)
		s.degrade("failover slot unprotected (synchronized_standby_slots is empty)")
	}

	snaps := newSnapshots(s, plan.state.Snapshots)
	snaps.publishStatus()
	pos := newPositions(plan.start)
	s.pos.Store(pos)
	s.noteSession(pos)
	s.m.confirmedLSN.Set(float64(plan.start))
	interval := s.cfg.StatusInterval
	// A failed query leaves the connection closing in the background
	// (pgconn closes it when a read is cut off): it must not be used again.
	wst, err := walSenderTimeout(ctx, conn)
	if err != nil {
		return fmt.Errorf("reading wal_sender_timeout: %w", err)
	}
	if wst > 0 && wst/3 < interval {
		interval = wst / 3
	}
	sessCtx, stopSess := context.WithCancelCause(ctx)
	defer stopSess(nil)
	sv := &saver{src: s, st: st, state: plan.state, pos: pos, stop: stopSess, saved: pos.current(), snaps: snaps}
	sess := &session{
		conn: conn, pos: pos, q: newQueue(queueBytes), interval: interval,
		heartbeat: s.heartbeat, log: s.log, metrics: s.m,
		dec:       newDecoder(source, s.types, pool, pos, emit, s.m, s.log),
		onConfirm: func(lsn uint64) { s.m.confirmedLSN.Set(float64(lsn)) },
		saveFinal: func() { sv.saveWithin(10 * time.Second) },
	}
	sess.dec.marks.wantKeepalive = &pos.wantKeepalive
	sess.dec.onRequest = snaps.request
	snaps.pool, snaps.source, snaps.pubs, snaps.q, snaps.save = pool, source, pubs, sess.q, sv.save
	saveCtx, stopSave := context.WithCancel(context.WithoutCancel(ctx))
	var saveWG sync.WaitGroup
	saveWG.Go(func() { sv.loop(saveCtx) })
	snapCtx, stopSnaps := context.WithCancel(sessCtx)
	var snapWG sync.WaitGroup
	snapWG.Go(func() { snaps.run(snapCtx) })
	s.log.Info("streaming", "from", formatLSN(plan.start), "publications", pubs, "status_interval", interval)
	err = sess.run(sessCtx, s.cfg.Slot, plan.start, pubs, srv.version)
	stopSnaps()
	snapWG.Wait()
	stopSave()
	saveWG.Wait()
	if cause := context.Cause(sessCtx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return explainStreamError(err, s.cfg.Slot, pubs)
}

// explainStreamError makes the errors a reconnect cannot cure fatal, with
// the way out.
func explainStreamError(err error, slot string, pubs []string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	if pgErr.Code == "42704" && strings.Contains(pgErr.Message, "publication") {
		// The publication exists now (it was ensured before streaming), so
		// it did not exist yet where the slot starts: pgoutput reads
		// publications as of each change and cannot get past that point.
		return fatal(fmt.Errorf("slot %s starts before publication %s existed, so PostgreSQL cannot decode its changes (%w). "+
			"Drop the slot and let the bridge create it (CDCBRIDGE_POSTGRES_SNAPSHOT=initial reads the existing rows), "+
			"or create the slot after the publication", slot, strings.Join(pubs, ","), err))
	}
	return err
}

// pollSlotLag exports how much WAL the slot holds.
func (s *Source) pollSlotLag(ctx context.Context, pool *pgxpool.Pool) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		var lag *int64
		err := pool.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8
			FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot).Scan(&lag)
		if err == nil && lag != nil {
			s.m.slotLagBytes.Set(float64(*lag))
			s.mu.Lock()
			s.slotLag, s.lagKnown = *lag, true
			s.mu.Unlock()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// OldestUnacked returns the commit time of the oldest transaction with an
// event not yet acknowledged (for cdcbridge_lag_seconds); ok is false when
// nothing is pending.
func (s *Source) OldestUnacked() (time.Time, bool) {
	p := s.pos.Load()
	if p == nil {
		return time.Time{}, false
	}
	return p.tracker.Oldest()
}

// Ready reports whether the first connection succeeded (as the active
// instance or as a healthy standby).
func (s *Source) Ready() bool { return s.ready.Load() }

func (s *Source) setRole(role string) {
	s.mu.Lock()
	s.role = role
	s.mu.Unlock()
	s.m.setRole(role)
}

func (s *Source) degrade(reason string) {
	s.mu.Lock()
	if _, ok := s.degraded[reason]; !ok {
		s.degraded[reason] = false
	}
	s.mu.Unlock()
}

// degradeSticky records a reason that stays for the life of the process
// (a gap accepted with on-slot-lost=continue).
func (s *Source) degradeSticky(reason string) {
	s.mu.Lock()
	s.degraded[reason] = true
	s.mu.Unlock()
}

// clearDegraded forgets the reasons a recovery cured.
func (s *Source) clearDegraded() {
	s.mu.Lock()
	for r, sticky := range s.degraded {
		if !sticky {
			delete(s.degraded, r)
		}
	}
	s.mu.Unlock()
}
