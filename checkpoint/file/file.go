// Package file is the embedded checkpoint store: every checkpoint of the
// process in one JSON document on local disk (CDCBRIDGE_CHECKPOINT_STORE
// file:///path).
//
// Guarantees:
//   - Save returns only once the checkpoint is durable: the whole document
//     is written to a temporary file in the same directory, fsynced, renamed
//     over the old one, and the directory is fsynced. A crash at any point
//     leaves either the old or the new document, never a mix.
//   - A document that does not parse, fails its checksum, or has an unknown
//     format makes Open fail with an error that names the file and the
//     problem. The store never silently starts from scratch, which would
//     re-read (or, with start=latest, skip) a whole source.
//   - A Save that cannot be made durable (directory gone or unwritable,
//     disk full) returns an error; the caller must not acknowledge the
//     position to its source.
//   - A position never moves backwards: Save of a position that sorts
//     before the stored one returns checkpoint.ErrStale.
//   - Only one process uses a file at a time (an exclusive lock on
//     PATH.lock); a second Open fails while the first holds it.
//
// Saves write the whole document, so their cost grows with the number of
// keys; concurrent Saves are grouped into one write. Callers batch (about
// one Save per key per second and one on shutdown), not one per event.
package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// Store is a checkpoint.Store backed by one local JSON file. It is safe for
// concurrent use.
type Store struct {
	path string
	lock *os.File
	// readOnly: opened by OpenReadOnly, without the lock.
	readOnly bool

	mu     sync.Mutex
	want   map[string]entry // latest saved by callers, durable or not yet
	gen    uint64           // bumped by every change to want
	durGen uint64           // generation of the document on disk
	closed bool

	writeMu sync.Mutex // one writer at a time; later Saves ride on its write
	durable map[string]entry
}

var _ checkpoint.Store = (*Store)(nil)

// Open loads the document at path, or starts an empty store when the file
// does not exist yet (creating its directory with mode 0700). It fails on a
// corrupt or unreadable document, and when another process holds the file.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("checkpoint file: empty path")
	}
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint file: creating directory %s: %w", dir, err)
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	s := &Store{path: path, lock: lock}
	entries, err := s.load()
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	s.want = entries
	s.durable = entries
	s.removeLeftovers()
	return s, nil
}

// OpenReadOnly loads the document at path for reading only, without the
// lock: a running bridge may hold it (its writes replace the file whole,
// so a reader never sees half of one). Save and Delete fail. For commands
// that show what a running bridge saved.
func OpenReadOnly(path string) (*Store, error) {
	s := &Store{path: filepath.Clean(path), readOnly: true}
	entries, err := s.load()
	if err != nil {
		return nil, err
	}
	s.want, s.durable = entries, entries
	return s, nil
}

// Path returns the file the store writes.
func (s *Store) Path() string { return s.path }

// load reads the document; a missing file is an empty store.
func (s *Store) load() (map[string]entry, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]entry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint file: reading %s: %w", s.path, err)
	}
	entries, err := decodeDocument(b)
	if err != nil {
		return nil, fmt.Errorf("checkpoint file %s is corrupt: %w (refusing to start from scratch; "+
			"restore it from a backup, or delete it to re-read every source from its configured start)", s.path, err)
	}
	return entries, nil
}

// removeLeftovers deletes temporary files of writes that a crash
// interrupted before their rename. The lock makes sure no other process
// is writing one right now.
func (s *Store) removeLeftovers() {
	matches, _ := filepath.Glob(tempPattern(s.path))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

func tempPattern(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
}

// Load returns the durable checkpoint of key, or checkpoint.ErrNotFound.
func (s *Store) Load(ctx context.Context, key string) (checkpoint.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return checkpoint.Checkpoint{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return checkpoint.Checkpoint{}, errClosed
	}
	e, ok := s.durable[key]
	if !ok {
		return checkpoint.Checkpoint{}, checkpoint.ErrNotFound
	}
	return e.checkpoint(), nil
}

// Keys returns the keys of scope that hold a durable checkpoint, sorted:
// those of the form scope + "/" + name, name without '/' (a DynamoDB
// stream's shards are the keys of scope "dynamodb/<streamARN>").
func (s *Store) Keys(ctx context.Context, scope string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	var keys []string
	prefix := scope + "/"
	for k := range s.durable {
		if name, ok := strings.CutPrefix(k, prefix); ok && !strings.Contains(name, "/") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

var errClosed = errors.New("checkpoint file: store is closed")

var errReadOnly = errors.New("checkpoint file: opened read-only")

// Save stores c under key and returns once it is on disk. A position that
// sorts before the stored one is refused with checkpoint.ErrStale; an equal
// one replaces the data.
func (s *Store) Save(ctx context.Context, key string, c checkpoint.Checkpoint) error {
	if s.readOnly {
		return errReadOnly
	}
	if key == "" {
		return errors.New("checkpoint file: empty key")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	if old, ok := s.want[key]; ok && c.Position < old.Position {
		s.mu.Unlock()
		return fmt.Errorf("checkpoint file: saving %s at %q, stored %q: %w", key, c.Position, old.Position, checkpoint.ErrStale)
	}
	e := newEntry(c, time.Now())
	s.gen++
	e.gen = s.gen
	s.want[key] = e
	err := s.flush(s.gen)
	if err != nil {
		// Forget what could not be written, unless a later Save replaced
		// it: the store holds, and compares against, only what is durable.
		s.mu.Lock()
		if cur, ok := s.want[key]; ok && cur.gen == e.gen {
			if d, ok := s.durable[key]; ok {
				s.want[key] = d
			} else {
				delete(s.want, key)
			}
		}
		s.mu.Unlock()
	}
	return err
}

// Delete removes key (a no-op when it is absent) and returns once that is
// on disk. Sources use it to forget positions that can never be read again
// (a DynamoDB shard that aged out of its stream), so the file stays small.
func (s *Store) Delete(ctx context.Context, key string) error {
	if s.readOnly {
		return errReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	if _, ok := s.want[key]; !ok {
		s.mu.Unlock()
		return nil
	}
	delete(s.want, key)
	s.gen++
	return s.flush(s.gen)
}

// flush makes generation gen durable. It is called with mu held and
// releases it. While one goroutine writes, others queue on writeMu; the
// first of them to get it writes everything saved so far, and the rest
// find their generation already on disk.
func (s *Store) flush(gen uint64) error {
	s.mu.Unlock()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	s.mu.Lock()
	if s.durGen >= gen {
		s.mu.Unlock()
		return nil
	}
	snapGen := s.gen
	snap := make(map[string]entry, len(s.want))
	for k, v := range s.want {
		snap[k] = v
	}
	s.mu.Unlock()

	doc, err := encodeDocument(snap)
	if err == nil {
		err = writeAtomic(s.path, doc)
	}
	if err != nil {
		return fmt.Errorf("checkpoint file: saving %s: %w", s.path, err)
	}
	s.mu.Lock()
	s.durGen = snapGen
	s.durable = snap
	s.mu.Unlock()
	return nil
}

// Close waits for a write in progress and releases the file. The store
// keeps nothing that is not on disk: every Save is durable when it returns.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.lock == nil {
		return nil
	}
	return s.lock.Close()
}

// writeAtomic replaces path with data: temporary file in the same
// directory, fsync, rename, fsync of the directory (without which the
// rename itself may be lost in a crash).
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("creating temporary file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
