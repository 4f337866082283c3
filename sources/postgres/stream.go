package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"
)

// queueBytes bounds the messages received and not yet decoded. The sink's
// in-flight budget bounds what is decoded and not yet acknowledged.
const queueBytes = 4 << 20

// session is one START_REPLICATION stream. Two goroutines share it:
//
//   - the receiver owns the connection: it reads messages (with read
//     deadlines, so it wakes at least once a second), answers keepalives
//     and sends standby status updates on its own schedule;
//   - the decoder takes messages from a byte-bounded queue, turns them
//     into events and emits them, blocking for as long as the sink
//     applies back-pressure.
//
// When the queue is full the receiver stops reading (TCP then holds the
// server back) but keeps sending status updates, so neither the server's
// wal_sender_timeout nor the slot's position depends on the sink's pace.
// pgconn connections are not safe for concurrent use; only the receiver
// touches the connection.
type session struct {
	conn      *pgconn.PgConn
	pos       *positions
	dec       *decoder
	q         *queue
	interval  time.Duration // status update period
	heartbeat func()
	log       *slog.Logger
	metrics   *metrics
	onConfirm func(lsn uint64) // called after each status update
	saveFinal func()           // saves the position before the last status update

	received atomic.Uint64 // highest WAL end the server reported
	// sentFlush is the flush position of the last status update (the
	// receiver's own: only it sends them).
	sentFlush uint64
}

// progressInterval is how soon a position that moved is confirmed, between
// the periodic status updates. A bridge that crashes sends again whatever
// the slot had not confirmed: with confirmations only every interval (10s),
// one that crashes more often than that would never move the slot and
// would repeat a growing backlog on every restart.
const progressInterval = time.Second

// keepalivePing is how often the receiver asks for a keepalive while a
// snapshot chunk waits for its high mark.
const keepalivePing = 20 * time.Millisecond

// startArgs are pgoutput's options: protocol 1 on every version, the
// publications, and logical decoding messages (14+, which every supported
// server is). Protocol 1 carries all the bridge emits, 18's stored
// generated columns included. The later ones add nothing without options
// the bridge leaves off: 2 (14) streams transactions in progress, 3 (15)
// decodes two-phase transactions at PREPARE, 4 (16) streams them for
// parallel apply. Streaming cannot help here: an event's id needs its
// commit LSN and an aborted transaction must never be emitted, so streamed
// changes would wait for their commit in the bridge, which is what the
// server's spilling past logical_decoding_work_mem already does (README,
// "PostgreSQL versions").
func startArgs(pubs []string, serverVersion int) []string {
	args := []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", strings.Join(pubs, ","))}
	if serverVersion >= 140000 {
		args = append(args, "messages 'true'")
	}
	return args
}

// run streams from the slot until ctx ends or an error occurs.
// The server starts at the slot's position or at start, whichever is
// later.
func (s *session) run(ctx context.Context, slot string, start uint64, pubs []string, serverVersion int) error {
	err := pglogrepl.StartReplication(ctx, s.conn, slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: startArgs(pubs, serverVersion),
	})
	if err != nil {
		return fmt.Errorf("starting replication from slot %s: %w", slot, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.receive(gctx) })
	g.Go(func() error { return s.decode(gctx) })
	err = g.Wait()
	var skipped *publicationSkippedError
	if errors.As(err, &skipped) {
		return fatal(fmt.Errorf("slot %s reaches changes made before publication %s existed, which PostgreSQL 18 skips with a warning (%w); "+
			"the bridge stops rather than miss them. Drop the slot and let the bridge create it (CDCBRIDGE_POSTGRES_SNAPSHOT=initial reads the existing rows), "+
			"or create the slot after the publication", slot, strings.Join(pubs, ","), skipped.err))
	}
	return err
}

// publicationSkippedError is PostgreSQL 18's warning that it skipped a
// change because a publication did not exist at that point in the WAL.
// Before 18 the same case is an error that ends the stream (SQLSTATE
// 42704, explained by the caller); from 18 on the server goes on without
// the change, a gap the bridge must not accept.
type publicationSkippedError struct{ err *pgconn.PgError }

func (e *publicationSkippedError) Error() string { return e.err.Error() }

// asPublicationSkipped recognises that warning by its SQLSTATE and the
// routine that raises it, which, unlike the message, are not translated.
func asPublicationSkipped(m *pgproto3.NoticeResponse) error {
	if m.Code != "55000" || (m.Routine != "LoadPublications" && !strings.Contains(m.Message, "publication")) {
		return nil
	}
	return &publicationSkippedError{pgconn.ErrorResponseToPgError((*pgproto3.ErrorResponse)(m))}
}

func (s *session) decode(ctx context.Context) error {
	for {
		it, err := s.q.pop(ctx)
		if err != nil {
			return err
		}
		if it.ctl != nil {
			err = it.ctl(ctx, s.dec)
		} else if it.data == nil {
			err = s.dec.keepalive(ctx, it.walEnd)
		} else {
			err = s.dec.handle(ctx, it.data, it.serverTime)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("decoding: %w", err)
		}
	}
}

// receive owns the connection; see session.
func (s *session) receive(ctx context.Context) error {
	nc := s.conn.Conn()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Now()) })
	defer stop()
	// A server that answers nothing, not even the reply each status update
	// requests, for this long is taken for gone.
	silence := 3*s.interval + 10*time.Second
	// The clock is read once per message (it is a measurable part of a
	// message's cost): now is when the last message arrived, or when a
	// read timed out, and serves the status and deadline checks of the
	// next iteration.
	now := time.Now()
	lastHeard := now
	nextStatus := now
	nextProgress := now.Add(progressInterval)
	var deadline, nextPing time.Time
	for {
		s.heartbeat()
		pinging := s.pos.wantKeepalive.Load()
		if pinging && !now.Before(nextPing) {
			// The answer is a keepalive with the server's send position,
			// which tells the decoder how far the stream has come.
			if err := s.sendStatus(true); err != nil {
				return err
			}
			nextPing = now.Add(keepalivePing)
		}
		if !now.Before(nextStatus) {
			if err := s.sendStatus(true); err != nil {
				return err
			}
			nextStatus = now.Add(s.interval)
		}
		if !now.Before(nextProgress) {
			nextProgress = now.Add(progressInterval)
			if s.pos.confirm() > s.sentFlush {
				if err := s.sendStatus(false); err != nil {
					return err
				}
			}
		}
		if !now.Before(deadline) {
			deadline = now.Add(time.Second)
			if nextStatus.Before(deadline) {
				deadline = nextStatus
			}
			if pinging && nextPing.Before(deadline) {
				deadline = nextPing
			}
			_ = nc.SetReadDeadline(deadline)
			if ctx.Err() != nil {
				return s.finish(ctx)
			}
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				if ctx.Err() != nil {
					return s.finish(ctx)
				}
				now = time.Now()
				if now.Sub(lastHeard) > silence {
					return fmt.Errorf("no message from the server for %s", now.Sub(lastHeard).Round(time.Second))
				}
				deadline = time.Time{}
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("receiving from the replication connection: %w", err)
		}
		now = time.Now()
		lastHeard = now
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parsing keepalive: %w", err)
				}
				s.noteReceived(uint64(ka.ServerWALEnd))
				s.q.tryPush(item{walEnd: uint64(ka.ServerWALEnd)})
				if ka.ReplyRequested {
					if err := s.sendStatus(false); err != nil {
						return err
					}
					nextStatus = now.Add(s.interval)
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parsing XLogData: %w", err)
				}
				s.noteReceived(uint64(x.ServerWALEnd))
				// The connection reuses its buffer on the next read.
				it := item{data: append([]byte(nil), x.WALData...), serverTime: x.ServerTime}
				if !s.q.tryPush(it) {
					if err := s.enqueue(ctx, it, &nextStatus); err != nil {
						return err
					}
					// Waiting for the decoder is not the server's silence.
					now = time.Now()
					lastHeard = now
				}
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.NoticeResponse:
			if err := asPublicationSkipped(m); err != nil {
				return fmt.Errorf("replication stream: %w", err)
			}
			s.log.Warn("the server warns on the replication connection", "severity", m.Severity, "code", m.Code, "message", m.Message, "detail", m.Detail)
		case *pgproto3.CopyDone:
			return errors.New("the server ended the replication stream")
		}
	}
}

// enqueue waits for room in the queue, sending status updates meanwhile.
func (s *session) enqueue(ctx context.Context, it item, nextStatus *time.Time) error {
	if s.q.tryPush(it) {
		return nil
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for !s.q.tryPush(it) {
		select {
		case <-s.q.space:
		case <-tick.C:
			s.heartbeat()
			if now := time.Now(); !now.Before(*nextStatus) || s.pos.confirm() > s.sentFlush {
				if err := s.sendStatus(false); err != nil {
					return err
				}
				*nextStatus = now.Add(s.interval)
			}
		case <-ctx.Done():
			return s.finish(ctx)
		}
	}
	return nil
}

func (s *session) noteReceived(lsn uint64) { storeMax(&s.received, lsn) }

// sendStatus reports the confirmed position as flushed and applied, and
// the received position as written.
func (s *session) sendStatus(replyRequested bool) error {
	flush := s.pos.confirm()
	write := max(s.received.Load(), flush)
	_ = s.conn.Conn().SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(write),
		WALFlushPosition: pglogrepl.LSN(flush),
		WALApplyPosition: pglogrepl.LSN(flush),
		ReplyRequested:   replyRequested,
	})
	_ = s.conn.Conn().SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("sending standby status update: %w", err)
	}
	s.sentFlush = flush
	s.metrics.statusUpdates.Inc()
	if s.onConfirm != nil {
		s.onConfirm(flush)
	}
	return nil
}

// finish sends a last status update on the way out, so the server holds
// as little as possible for the next session; the position is saved first
// (the server is told only what the store holds).
func (s *session) finish(ctx context.Context) error {
	if s.saveFinal != nil {
		s.saveFinal()
	}
	if err := s.sendStatus(false); err != nil {
		s.log.Debug("final status update failed", "err", err)
	}
	return ctx.Err()
}
