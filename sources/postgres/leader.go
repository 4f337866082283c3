package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcbridge/cdcbridge/internal/fence"
)

// Leadership: one bridge per slot streams. Before it touches the slot, an
// instance takes a session-level advisory lock derived from the slot name
// on an ordinary connection and holds it for as long as it is active.
// Others wait on the lock (hot standbys) and take over the moment the
// holder's session ends: a crash, a closed connection, or
// pg_terminate_backend. The holder watches its lock connection; when it
// breaks, the holder no longer knows it is the only one, so it stops
// streaming and emitting at once.

// errLeadershipLost is the cause of the active context's end when the
// lock connection broke.
var errLeadershipLost = errors.New("lost the slot's advisory lock connection")

// lockKey maps a slot name to the advisory lock key.
func lockKey(slot string) int64 {
	h := fnv.New64a()
	h.Write([]byte("cdcbridge/slot/" + slot))
	return int64(h.Sum64())
}

// lease is a held lock. ctx ends (with cause errLeadershipLost) when the
// lock connection breaks.
type lease struct {
	conn   *pgx.Conn
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}

	leadership
	hold     *fence.Hold // on Config.Fence: sends end when the lock may be lost
	acquired time.Time
	waited   bool // another instance held the lock first
}

// acquire waits until this instance holds the slot's lock.
func (s *Source) acquire(ctx context.Context) (*lease, error) {
	key := lockKey(s.cfg.Slot)
	bo := newBackoff()
	for {
		s.heartbeat()
		conn, err := connectNormal(ctx, s.cfg.URL)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if isFatal(err) {
				return nil, err
			}
			s.degrade("source disconnected: " + err.Error())
			s.log.Warn("connecting to take the slot's lock", "err", err)
			if err := wait(ctx, bo.Next(), s.heartbeat); err != nil {
				return nil, err
			}
			continue
		}
		s.clearDegraded()
		s.ready.Store(true) // a healthy standby is ready
		got, waited, err := s.waitLock(ctx, conn, key)
		var armed time.Time
		if got {
			armed, err = s.armLockSession(ctx, conn)
			got = err == nil
		}
		if got {
			l := &lease{conn: conn, done: make(chan struct{}), acquired: time.Now(), waited: waited}
			l.hold = s.cfg.Fence.Hold("postgres slot "+s.cfg.Slot, armed.Add(s.cfg.LeaderTimeout), l.busy)
			l.ctx, l.cancel = context.WithCancelCause(ctx)
			go s.watchLease(l)
			return l, nil
		}
		conn.Close(context.Background())
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if isFatal(err) {
			return nil, err
		}
		s.log.Warn("waiting for the slot's lock", "err", err)
		if err := wait(ctx, bo.Next(), s.heartbeat); err != nil {
			return nil, err
		}
	}
}

// waitLock blocks on pg_advisory_lock in steps of lock_timeout, so the
// wait stays visible to the heartbeat and to ctx.
// waited reports whether another instance held the lock first.
func (s *Source) waitLock(ctx context.Context, conn *pgx.Conn, key int64) (got, waited bool, err error) {
	if _, err := conn.Exec(ctx, "SET lock_timeout = '2s'"); err != nil {
		return false, false, fmt.Errorf("setting lock_timeout: %w", err)
	}
	// Whether the lock was free decides whether a previous leader may
	// still be stopping (see fence.go).
	var free bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&free); err != nil {
		return false, false, fmt.Errorf("taking the slot's advisory lock: %w", err)
	}
	if free {
		if _, err := conn.Exec(ctx, "SET lock_timeout = 0"); err != nil {
			return false, false, fmt.Errorf("resetting lock_timeout: %w", err)
		}
		return true, false, nil
	}
	announced := false
	for {
		s.heartbeat()
		_, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key)
		if err == nil {
			if _, err := conn.Exec(ctx, "SET lock_timeout = 0"); err != nil {
				return false, true, fmt.Errorf("resetting lock_timeout: %w", err)
			}
			return true, true, nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55P03" { // lock_not_available
			return false, true, fmt.Errorf("taking the slot's advisory lock: %w", err)
		}
		s.setRole("standby")
		if !announced {
			announced = true
			s.log.Info("standby: another instance holds the slot; waiting to take over",
				"slot", s.cfg.Slot, "holder", lockHolder(ctx, conn, key))
		}
	}
}

// lockHolder describes the session holding the lock, for the log.
func lockHolder(ctx context.Context, conn *pgx.Conn, key int64) string {
	var desc string
	err := conn.QueryRow(ctx, `SELECT format('pid %s (%s from %s)', a.pid, a.application_name, coalesce(host(a.client_addr), 'local'))
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		  AND l.classid = (($1::int8 >> 32) & 4294967295)::oid AND l.objid = ($1::int8 & 4294967295)::oid
		LIMIT 1`, key).Scan(&desc)
	if err != nil {
		return "unknown"
	}
	return desc
}

// watchLease ends the lease's context the moment the lock connection
// breaks. A terminated backend sends an error and closes the socket, which
// ends the wait at once; a silent network failure is caught by the ping
// after each quiet interval (a fifth of LeaderTimeout, see fence.go), which
// also keeps the server's idle_session_timeout from ending the session.
func (s *Source) watchLease(l *lease) {
	defer close(l.done)
	pc := l.conn.PgConn()
	every := s.cfg.pingEvery()
	for {
		wctx, cancel := context.WithTimeout(l.ctx, every)
		err := pc.WaitForNotification(wctx)
		cancel()
		if l.ctx.Err() != nil {
			return
		}
		if err != nil && !pgconn.Timeout(err) {
			s.loseLease(l, err)
			return
		}
		sent := time.Now()
		pctx, cancel := context.WithTimeout(l.ctx, every)
		err = pc.Ping(pctx)
		cancel()
		if l.ctx.Err() != nil {
			return
		}
		if err != nil {
			s.loseLease(l, err)
			return
		}
		l.hold.Extend(sent.Add(s.cfg.LeaderTimeout))
	}
}

func (s *Source) loseLease(l *lease, err error) {
	s.log.Error("the slot's lock connection broke: stopping at once, another instance may take over", "err", err)
	l.hold.Revoke()
	l.cancel(fmt.Errorf("%w: %v", errLeadershipLost, err))
}

// release gives the lock up by closing its session.
func (l *lease) release() {
	l.cancel(nil)
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l.conn.Close(ctx)
}
