package kinesis

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

// The dead-letter directory keeps events the stream cannot take: records
// over its size limit and records Kinesis rejects as invalid. Each process
// start appends to its own file, dlq-<UTC start time>-<pid>.jsonl, one
// JSON object per line:
//
//	{"reason":"...","stream":"orders","bytes":1234567,"time":"...","envelope":{...}}
//
// A line is written and fsynced before its placeholder is put on the
// stream; the placeholder's data.oversize.dlq is "<file>#<line>" (1-based
// line number). Lines are never rewritten.

// dlqJob asks the writer to keep r and make its placeholder.
type dlqJob struct {
	r      *record
	reason string // metric label: oversize, invalid
	detail string
	limit  int // the stream's record limit, for the placeholder
}

// dlqDone is the writer's answer, sent to the loop.
type dlqDone struct {
	job dlqJob
	buf []byte // the placeholder's envelope
	ref string // file#line
	err error  // the placeholder cannot be made: fatal
}

type dlqWriter struct {
	dir, stream string
	out         chan<- any
	// limit is how long one line may keep failing before the writer
	// reports a fatal error (0: forever); log gets the failures.
	limit time.Duration
	log   *slog.Logger
	retry backoff.Backoff // between attempts at one line

	mu    sync.Mutex
	queue []dlqJob
	wake  chan struct{}

	f    *os.File
	name string
	line int
	size int64
}

func newDLQWriter(dir, stream string, out chan<- any) *dlqWriter {
	return &dlqWriter{dir: dir, stream: stream, out: out, wake: make(chan struct{}, 1)}
}

// check makes sure the directory exists and is writable, so a bad
// CDCBRIDGE_DLQ_DIR is found at start, not at the first oversize row.
func (w *dlqWriter) check() error {
	if err := os.MkdirAll(w.dir, 0o750); err != nil {
		return fmt.Errorf("dead-letter directory: %w", err)
	}
	f, err := os.CreateTemp(w.dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("dead-letter directory %s is not writable: %w", w.dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

func (w *dlqWriter) enqueue(j dlqJob) {
	w.mu.Lock()
	w.queue = append(w.queue, j)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes queued jobs in order until ctx ends. A failed write is
// undone (the file is cut back) and retried with backoff: a dead-letter
// event is never dropped. When one line keeps failing for longer than
// limit, the writer sends a fatal error to the loop and stops: the
// event stays unacknowledged, so the source keeps it for the next start.
func (w *dlqWriter) run(ctx context.Context, st *statusBox) error {
	defer func() {
		if w.f != nil {
			w.f.Close()
		}
	}()
	for {
		w.mu.Lock()
		var j dlqJob
		has := len(w.queue) > 0
		if has {
			j = w.queue[0]
			w.queue[0] = dlqJob{}
			w.queue = w.queue[1:]
		}
		w.mu.Unlock()
		if !has {
			select {
			case <-ctx.Done():
				return nil
			case <-w.wake:
			}
			continue
		}
		var failingSince time.Time
		bo := w.retry
		for attempt := 1; ; attempt++ {
			ref, err := w.write(j)
			if err == nil {
				st.setTrouble("dlq", "")
				done := dlqDone{job: j, ref: ref}
				done.buf, done.err = placeholder(j, ref)
				select {
				case w.out <- done:
				case <-ctx.Done():
					return nil
				}
				break
			}
			st.setTrouble("dlq", "dead-letter writes failing: "+err.Error())
			if attempt == 1 {
				failingSince = time.Now()
				if w.log != nil {
					w.log.Warn("writing a dead-letter line failed; retrying", "dir", w.dir, "id", j.r.id, "limit", w.limit.String(), "err", err)
				}
			}
			if w.limit > 0 && time.Since(failingSince) >= w.limit {
				fatal := fmt.Errorf("dead-letter directory %s (CDCBRIDGE_DLQ_DIR): the line of event %s could not be written for %s; "+
					"stopping rather than acknowledging an event that is kept nowhere: %w", w.dir, j.r.id, w.limit, err)
				select {
				case w.out <- ctrlFatal{fatal}:
				case <-ctx.Done():
				}
				return nil
			}
			if bo.Wait(ctx) != nil {
				return nil
			}
		}
	}
}

func (w *dlqWriter) write(j dlqJob) (string, error) {
	if w.f == nil {
		if err := os.MkdirAll(w.dir, 0o750); err != nil {
			return "", err
		}
		if w.name == "" {
			w.name = fmt.Sprintf("dlq-%s-%d.jsonl", time.Now().UTC().Format("20060102T150405Z"), os.Getpid())
		}
		f, err := os.OpenFile(filepath.Join(w.dir, w.name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return "", err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return "", err
		}
		// The lock tells `cdcbridge dlq replay` that this file is still
		// being written, so it replays its lines but does not remove it.
		// A file system without flock only loses that hint.
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		w.f, w.size = f, st.Size()
	}
	line := make([]byte, 0, len(j.r.buf)+len(j.detail)+len(w.stream)+128)
	line = append(line, `{"reason":`...)
	line = cdc.AppendJSONString(line, j.reason+": "+j.detail)
	line = append(line, `,"stream":`...)
	line = cdc.AppendJSONString(line, w.stream)
	line = append(line, `,"bytes":`...)
	line = strconv.AppendInt(line, int64(j.r.size()), 10)
	line = append(line, `,"time":"`...)
	line = time.Now().UTC().AppendFormat(line, time.RFC3339Nano)
	line = append(line, `","envelope":`...)
	line = append(line, j.r.buf...)
	line = append(line, "}\n"...)
	_, err := w.f.Write(line)
	if err == nil {
		err = w.f.Sync()
	}
	if err != nil {
		// Cut back what may have been written and start over on a fresh
		// descriptor: after a failed fsync the page cache cannot be trusted.
		_ = w.f.Truncate(w.size)
		w.f.Close()
		w.f = nil
		return "", err
	}
	w.size += int64(len(line))
	w.line++
	return w.name + "#" + strconv.Itoa(w.line), nil
}

// placeholder encodes the event that stands in for a dead-lettered one:
// same id, sequence and partition key, data.oversize set, no row images.
// It is made from the envelope, which the producer keeps instead of the
// event.
func placeholder(j dlqJob, ref string) ([]byte, error) {
	orig, err := cdc.Decode(j.r.buf)
	if err != nil {
		return nil, fmt.Errorf("decoding the envelope of event %s for its placeholder: %w", j.r.id, err)
	}
	ph := *orig
	ph.PartitionKey = j.r.pk
	ph.Oversize = &cdc.Oversize{Bytes: j.r.size(), DLQ: ref}
	buf, err := cdc.AppendEncode(getBuf(512), &ph)
	if err == nil && len(buf)+len(j.r.pk) > j.limit && ph.Key != nil {
		ph.Key = nil // a primary key too large to repeat
		buf, err = cdc.AppendEncode(buf[:0], &ph)
	}
	if err != nil {
		return nil, fmt.Errorf("encoding the placeholder of event %s: %w", j.r.id, err)
	}
	if len(buf)+len(j.r.pk) > j.limit {
		return nil, fmt.Errorf("the placeholder of event %s (%d bytes) exceeds the stream's record limit of %d bytes", j.r.id, len(buf)+len(j.r.pk), j.limit)
	}
	return buf, nil
}
