// Package dedupe recognises the duplicates that at-least-once delivery
// brings to a consumer of cdcbridge's stream.
//
// Every change carries an idempotency key, its CloudEvents source and id,
// and a sequence that sorts in source order for the same row (partition
// key). A duplicate repeats both. [Filter] drops an event whose key it has
// already seen and, in monotonic mode, one whose sequence is at or below
// the last one it let through for the same partition key, so that a
// consumer applying what it passes never goes backwards.
//
// A Filter's memory is bounded, by count and optionally by age: a duplicate
// arriving after its original was forgotten passes. The monotonic check
// then still stops it as long as its row's last sequence is remembered.
package dedupe

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Key returns the idempotency key of an event: its source and id joined by
// a space. It is unambiguous for valid CloudEvents, whose source is a URI
// reference and therefore holds no space, and is the same string each time
// the same change is sent.
func Key(source, id string) string {
	return source + " " + id
}

// Reasons reported by [Filter.Seen].
const (
	ReasonDuplicateID   = "duplicate id"
	ReasonStaleSequence = "stale sequence"
)

// DefaultMaxKeys is used when Config.MaxKeys is 0. At roughly 200 bytes an
// entry, it bounds a Filter to some tens of megabytes.
const DefaultMaxKeys = 100_000

// Config configures a [Filter]. The zero value is valid.
type Config struct {
	// MaxKeys bounds both the idempotency keys remembered and, in monotonic
	// mode, the partition keys whose last sequence is remembered; past it
	// the oldest entry is forgotten. 0 means DefaultMaxKeys.
	MaxKeys int
	// MaxAge forgets an idempotency key this long after it was first seen,
	// and a partition key's sequence this long after it last advanced.
	// 0 means no age limit.
	MaxAge time.Duration
	// Monotonic also drops an event whose sequence is at or below (in
	// lexicographic order) the last one let through for the same source
	// and partition key. Events without a sequence skip this check.
	Monotonic bool
	// Now is the clock. nil means time.Now.
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.MaxKeys < 0 {
		return fmt.Errorf("dedupe: MaxKeys is %d, want 0 (default %d) or more", c.MaxKeys, DefaultMaxKeys)
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("dedupe: MaxAge is %v, want 0 (no limit) or more", c.MaxAge)
	}
	return nil
}

// Filter remembers the events it has let through. It does no I/O, and each
// call costs O(1) amortized time. A Filter is not safe for concurrent use.
type Filter struct {
	maxKeys   int
	maxAge    time.Duration
	monotonic bool
	now       func() time.Time
	epoch     time.Time

	ids   ordered // idempotency keys, by first sight
	parts ordered // partition keys -> last sequence, by last advance

	// Scratch for lookup keys, so that duplicates allocate nothing.
	idBuf, partBuf []byte
}

// New returns a Filter configured by cfg.
func New(cfg Config) (*Filter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Filter{
		maxKeys:   cfg.MaxKeys,
		maxAge:    cfg.MaxAge,
		monotonic: cfg.Monotonic,
		now:       cfg.Now,
		epoch:     cfg.Now(),
		ids:       newOrdered(),
		parts:     newOrdered(),
	}, nil
}

// Seen reports whether the event is a duplicate, and why: ReasonDuplicateID
// when its source and id were seen before, ReasonStaleSequence when (in
// monotonic mode) its sequence does not advance its partition key. A new
// event is recorded; a duplicate changes nothing.
func (f *Filter) Seen(source, id, partitionKey, sequence string) (dup bool, reason string) {
	// Durations since the epoch keep the monotonic clock reading, so wall
	// clock steps do not expire entries early or late.
	at := f.now().Sub(f.epoch)
	if f.maxAge > 0 {
		f.ids.expire(at - f.maxAge)
		f.parts.expire(at - f.maxAge)
	}

	f.idBuf = appendPair(f.idBuf[:0], source, id)
	if _, ok := f.ids.lookup(f.idBuf); ok {
		return true, ReasonDuplicateID
	}

	if f.monotonic && sequence != "" {
		f.partBuf = appendPair(f.partBuf[:0], source, partitionKey)
		if i, ok := f.parts.lookup(f.partBuf); ok {
			if sequence <= f.parts.entries[i].value {
				return true, ReasonStaleSequence
			}
			f.parts.update(i, strings.Clone(sequence), at)
		} else {
			if f.parts.len() >= f.maxKeys {
				f.parts.removeOldest()
			}
			f.parts.insert(string(f.partBuf), strings.Clone(sequence), at)
		}
	}

	if f.ids.len() >= f.maxKeys {
		f.ids.removeOldest()
	}
	f.ids.insert(string(f.idBuf), "", at)
	return false, ""
}

// Len returns the number of idempotency keys remembered.
func (f *Filter) Len() int { return f.ids.len() }

// Partitions returns the number of partition keys whose last sequence is
// remembered (0 unless monotonic).
func (f *Filter) Partitions() int { return f.parts.len() }

// appendPair encodes two strings unambiguously, whatever they contain.
func appendPair(b []byte, first, second string) []byte {
	b = binary.AppendUvarint(b, uint64(len(first)))
	b = append(b, first...)
	return append(b, second...)
}
