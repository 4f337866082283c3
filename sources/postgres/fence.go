package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcbridge/cdcbridge/internal/fence"
)

// Fenced leadership: a leader that can no longer be sure it holds the
// slot's lock stops sending before a standby can start.
//
//   - The server ends a silent leader's lock session: the lock session has
//     idle_session_timeout = LeaderTimeout (PostgreSQL 14+), and the leader
//     pings it every fifth of that. A leader cut off from the server keeps
//     the lock at most LeaderTimeout after its last ping.
//   - The leader counts itself leader until the send time of its last
//     successful ping plus LeaderTimeout (a hold on Config.Fence: the sink's
//     sends end by then). A ping that fails or takes longer than a fifth of
//     LeaderTimeout, or a broken lock connection, ends the leadership at
//     once: streaming stops and Revoke cancels the sink's attempts in
//     flight, well before the server frees the lock.
//   - A standby that waited for the lock waits two fifths of LeaderTimeout
//     plus a second more before it streams: even a leader whose lock
//     session was terminated without it hearing so has noticed by then
//     (its next ping failed) and stopped. It ends a previous leader's
//     walsender that still holds the slot (that leader is fenced by then)
//     instead of waiting for wal_sender_timeout.
//   - Records of a lost leadership that are still in the sink can never be
//     sent after the loss (the gate refuses them), nor taken back: Run then
//     fails with an error wrapping fence.ErrFenced, and a restart
//     continues from the slot.

// pingEvery is the lock session's ping period and timeout.
func (c *Config) pingEvery() time.Duration { return c.LeaderTimeout / 5 }

// takeoverDelay is how long a standby that took the lock waits before
// streaming: the longest a leader whose lock session ended needs to notice
// (a ping period and a ping timeout), plus a margin for requests that
// reached the server just before.
func (c *Config) takeoverDelay() time.Duration { return 2*c.pingEvery() + time.Second }

// armLockSession makes the server end the lock session, and so free the
// lock, when it hears nothing from this leader for LeaderTimeout. It
// returns the time the setting was sent: the leadership is certain until
// then plus LeaderTimeout.
func (s *Source) armLockSession(ctx context.Context, conn *pgx.Conn) (time.Time, error) {
	sent := time.Now()
	_, err := conn.Exec(ctx, fmt.Sprintf("SET idle_session_timeout = %d", s.cfg.LeaderTimeout.Milliseconds()))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // unrecognized parameter: before PostgreSQL 14
		// Without it a leader cut off from the server would keep the lock
		// until TCP gives up, and no standby could take over: this is the
		// first thing a start does, so it is where an old server is told.
		return sent, fatal(fmt.Errorf("the server has no idle_session_timeout, so it is older than PostgreSQL 14, which cdcbridge needs "+
			"(the setting fences a lost leader; see `cdcbridge check`): %w", err))
	}
	if err != nil {
		return sent, fmt.Errorf("setting idle_session_timeout on the lock session: %w", err)
	}
	return sent, nil
}

// leadership is what a lease tracks for fencing.
type leadership struct {
	mu       sync.Mutex
	sessions []*positions // every replication session of this leadership
}

func (ld *leadership) addSession(p *positions) {
	ld.mu.Lock()
	ld.sessions = append(ld.sessions, p)
	ld.mu.Unlock()
}

// busy reports whether events of this leadership are in the sink and not
// yet acknowledged.
func (ld *leadership) busy() bool {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, p := range ld.sessions {
		if p.tracker.Pending() > 0 {
			return true
		}
	}
	return false
}

// endHold ends the leadership's hold once the lock is released: events
// still in the sink stay refused (another instance may stream now);
// without any, the hold goes.
func (l *lease) endHold() {
	if l.busy() {
		l.hold.Revoke()
		return
	}
	l.hold.Close()
}

// noteSession adds a replication session to the current leadership.
func (s *Source) noteSession(p *positions) {
	if l := s.leader.Load(); l != nil {
		l.addSession(p)
	}
}

// drainLost handles the end of a leadership whose lock was lost: with a
// fence, events still in the sink can never be sent now, so Run must stop.
func (s *Source) drainLost(ctx context.Context, l *lease) error {
	defer l.endHold()
	if s.cfg.Fence == nil {
		return nil
	}
	// Acknowledgements of requests that completed just before the loss
	// may still be on their way.
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	grace := time.NewTimer(500 * time.Millisecond)
	defer grace.Stop()
	for l.busy() {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-grace.C:
			return fatal(fmt.Errorf("postgres: the slot's lock was lost while changes of this instance were still waiting for Kinesis; "+
				"they must not be sent any more (another instance streams the slot now), so this instance stops and a restart continues from the slot: "+
				"records of a lost leadership are stuck in the sink: %w", fence.ErrFenced))
		}
	}
	return nil
}

// awaitTakeover waits, after a standby took the lock, until a previous
// leader has certainly stopped sending.
func (s *Source) awaitTakeover(ctx context.Context, l *lease) error {
	d := time.Until(l.acquired.Add(s.cfg.takeoverDelay()))
	if d <= 0 {
		return nil
	}
	s.log.Info("took the slot's lock: waiting for the previous leader to stop sending", "wait", d.Round(time.Millisecond).String())
	return wait(ctx, d, s.heartbeat)
}

// endStaleWalsender ends the walsender of a previous leader that still
// streams the slot although this instance holds the lock: that leader lost
// its lock session and has stopped (after the takeover delay), but its
// walsender would linger until wal_sender_timeout.
func (s *Source) endStaleWalsender(ctx context.Context, pool *pgxpool.Pool, pid int) {
	if l := s.leader.Load(); l != nil {
		if err := s.awaitTakeover(ctx, l); err != nil {
			return
		}
	}
	var ok bool
	err := pool.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok)
	if err != nil || !ok {
		s.log.Warn("could not end the previous leader's walsender; waiting for the server to drop it (wal_sender_timeout)", "pid", pid, "err", err)
		return
	}
	s.log.Info("ended the previous leader's walsender", "pid", pid, "slot", s.cfg.Slot)
}
