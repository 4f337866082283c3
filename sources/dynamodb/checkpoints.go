package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// saveConcurrency bounds parallel saves: a file store groups concurrent
// saves into one write, a DynamoDB store makes one request each.
const saveConcurrency = 16

// saveLoop saves acknowledged positions every CheckpointInterval until ctx
// ends. A stale checkpoint (another writer is ahead) stops it at once;
// other failures are retried each round until CheckpointFailureLimit.
func (s *Source) saveLoop(ctx context.Context) error {
	t := time.NewTicker(s.cfg.CheckpointInterval)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil // Run saves once more after the readers stopped
		case <-t.C:
		}
		s.heartbeat()
		err := s.saveAll(ctx)
		switch {
		case err == nil:
			lastOK = time.Now()
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, checkpoint.ErrStale):
			return err
		default:
			s.m.commitFailures.Inc()
			s.health.set("checkpoint saves failing", err)
			if time.Since(lastOK) > s.cfg.CheckpointFailureLimit {
				return fmt.Errorf("dynamodb source: checkpoints could not be saved for %v: %w", s.cfg.CheckpointFailureLimit, err)
			}
			s.log.Warn("saving checkpoints failed; retrying", "err", err)
		}
	}
}

// saveAll saves the watermark of every shard that moved since its last
// save.
func (s *Source) saveAll(ctx context.Context) error {
	s.mu.Lock()
	shards := make([]*shard, 0, len(s.shards))
	for _, sh := range s.shards {
		shards = append(shards, sh)
	}
	s.mu.Unlock()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(saveConcurrency)
	for _, sh := range shards {
		pos, ok := sh.tracker.Watermark()
		if !ok {
			continue
		}
		g.Go(func() error { return s.saveShard(gctx, sh, pos, nil, false) })
	}
	return g.Wait()
}

// saveShard saves pos for sh unless the store already holds it or a later
// one; finish marks the finish checkpoint, after which nothing else is
// saved for the shard.
func (s *Source) saveShard(ctx context.Context, sh *shard, pos string, data []byte, finish bool) error {
	sh.saveMu.Lock()
	defer sh.saveMu.Unlock()
	if sh.finished || (!finish && pos <= sh.saved) {
		return nil
	}
	// A bounded wait: a store that stopped answering must not hold saveMu
	// (and the shard's status) for longer than a request.
	sctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	var err error
	if sh.tenure != nil {
		err = s.lm.save(sctx, sh.tenure, checkpoint.Checkpoint{Position: pos, Data: data})
	} else {
		err = s.store.Save(sctx, sh.key, checkpoint.Checkpoint{Position: pos, Data: data})
	}
	if err != nil {
		if errors.Is(err, errTenureEnded) {
			if finish {
				return err // the reader stops: another instance finishes the shard
			}
			return nil
		}
		if errors.Is(err, checkpoint.ErrStale) {
			return fmt.Errorf("dynamodb source: shard %s: another writer moved its checkpoint ahead (is a second instance reading this stream with the same store?): %w", sh.id, err)
		}
		return fmt.Errorf("saving checkpoint of shard %s: %w", sh.id, err)
	}
	s.m.commits.Inc()
	sh.saved = pos
	sh.savedView.Store(&pos)
	sh.finished = finish
	return nil
}

// saveFinished saves sh's finish checkpoint, retrying until it is durable
// or ctx ends. It is called only once every event of the shard was
// acknowledged.
func (s *Source) saveFinished(ctx context.Context, sh *shard, d ckptData) error {
	d.FinishedAt = time.Now().UTC().Truncate(time.Millisecond)
	d.Parent = sh.parent
	bo := newBackoff(200*time.Millisecond, s.cfg.MaxBackoff)
	for {
		err := s.saveShard(ctx, sh, FinishedPosition, d.encode(), true)
		if err == nil || errors.Is(err, checkpoint.ErrStale) || errors.Is(err, errTenureEnded) || ctx.Err() != nil {
			return err
		}
		s.m.commitFailures.Inc()
		s.health.set("checkpoint saves failing", err)
		s.log.Warn("saving a finished shard's checkpoint failed; retrying", "shard", sh.id, "err", err)
		s.heartbeat()
		if err := bo.wait(ctx); err != nil {
			return err
		}
	}
}

// loaded is a shard checkpoint as read from the store.
type loaded struct {
	found    bool
	position string
	data     ckptData
}

func (l loaded) finished() bool { return l.found && l.position == FinishedPosition }

func (s *Source) loadKey(ctx context.Context, key string) (loaded, error) {
	c, err := s.store.Load(ctx, key)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return loaded{}, nil
	}
	if err != nil {
		return loaded{}, err
	}
	return parseLoaded(key, c.Position, c.Data)
}

// parseLoaded validates a checkpoint found in the store.
func parseLoaded(key, position string, data []byte) (loaded, error) {
	d, err := decodeCkptData(data)
	if err != nil {
		return loaded{}, fmt.Errorf("checkpoint %s: data: %w", key, err)
	}
	if position != FinishedPosition && position != "" {
		if _, err := cdc.PadSequence(position); err != nil || len(position) != 40 {
			return loaded{}, fmt.Errorf("checkpoint %s: position %q is neither a padded sequence number nor %s", key, position, FinishedPosition)
		}
	}
	return loaded{found: true, position: position, data: d}, nil
}

// minSequenceDigits is the shortest sequence number DynamoDB Streams
// writes: AWS's have 21 to 40 digits, DynamoDB Local's are zero-padded
// to 21.
const minSequenceDigits = 21

// rawSequence turns a checkpoint position (padded to 40 digits) back into
// the sequence number the API knows: the padding removed down to 21 digits.
func rawSequence(padded string) string {
	s := strings.TrimLeft(padded, "0")
	if len(s) < minSequenceDigits {
		s = strings.Repeat("0", minSequenceDigits-len(s)) + s
	}
	return s
}

// latestMargin is how far before a LATEST start records are still
// delivered after a restart: creation times are approximate (rounded to
// the second, or to the minute by DynamoDB Local), and a record the first
// run saw must not be dropped by the second.
const latestMargin = time.Minute

// startFrom turns a loaded checkpoint into the shard's start. Called with
// s.mu held.
func (sh *shard) startFrom(l loaded) {
	sh.loaded = true
	sh.hadCheckpoint = l.found
	switch {
	case !l.found:
	case l.position == FinishedPosition:
		sh.state = stateFinished
		sh.saveMu.Lock()
		sh.saved, sh.finished = FinishedPosition, true
		fin := FinishedPosition
		sh.savedView.Store(&fin)
		sh.saveMu.Unlock()
	case l.position == "":
		// Started at LATEST, no record yet: what came since is at the
		// horizon, what came well before the start is not wanted.
		if !l.data.LatestAt.IsZero() {
			sh.start.skipBefore = l.data.LatestAt.Add(-latestMargin)
		}
	default:
		sh.start.after = rawSequence(l.position)
		sh.saveMu.Lock()
		sh.saved = l.position
		pos := l.position
		sh.savedView.Store(&pos)
		sh.saveMu.Unlock()
	}
}

// streamMarker is the Data of the stream's first-start checkpoint.
type streamMarker struct {
	Start     string    `json:"start"`
	StartedAt time.Time `json:"started_at"`
}

const markerPosition = "started"

// The optional store methods the source uses to forget shards that left
// the stream (checkpoint/file and checkpoint/dynamodb have them).
type (
	keyLister interface {
		Keys(ctx context.Context, scope string) ([]string, error)
	}
	keyDeleter interface {
		Delete(ctx context.Context, key string) error
	}
)

// pruneAge is how long a finished shard's checkpoint is kept after it
// finished: DynamoDB keeps a shard 24 hours after its last record.
const pruneAge = 25 * time.Hour

// prune deletes the checkpoints of finished shards that are no longer in
// the stream and finished more than a day ago, so that the store does not
// grow with every shard a long-lived stream ever had.
func (s *Source) prune(ctx context.Context, listed map[string]bool) {
	lister, ok1 := s.store.(keyLister)
	deleter, ok2 := s.store.(keyDeleter)
	if !ok1 || !ok2 {
		return
	}
	scope := streamScope(s.info.arn)
	keys, err := lister.Keys(ctx, scope)
	if err != nil {
		s.log.Warn("listing checkpoints to prune failed", "err", err)
		return
	}
	n := 0
	for _, k := range keys {
		id := strings.TrimPrefix(k, scope+"/")
		if listed[id] {
			continue
		}
		l, err := s.loadKey(ctx, k)
		if err != nil || !l.finished() || l.data.FinishedAt.IsZero() || time.Since(l.data.FinishedAt) < pruneAge {
			continue
		}
		if err := deleter.Delete(ctx, k); err != nil {
			s.log.Warn("deleting the checkpoint of a shard that left the stream failed", "shard", id, "err", err)
			return
		}
		n++
	}
	if n > 0 {
		s.log.Info("forgot checkpoints of shards that left the stream", "shards", n)
	}
}
