package checkpoint

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Store.Load for a key that was never saved.
var ErrNotFound = errors.New("checkpoint not found")

// ErrStale is returned by Store.Save when the stored position is ahead of the
// one being saved, or when another owner holds the key: the caller must stop
// and must not retry blindly.
var ErrStale = errors.New("checkpoint is stale")

// Checkpoint is what a store keeps per key.
type Checkpoint struct {
	// Position orders checkpoints of one key: it compares as a string and
	// never moves backwards (zero-padded sequence numbers, 16-hex LSNs).
	Position string `json:"position"`
	// Data is free-form state of the source (JSON).
	Data []byte `json:"data,omitempty"`
}

// Store keeps checkpoints durably. Save returns only once the checkpoint is
// durable. Sources call it at a modest rate (about once a second and on
// shutdown), not per event.
type Store interface {
	Load(ctx context.Context, key string) (Checkpoint, error)
	Save(ctx context.Context, key string, c Checkpoint) error
	Close() error
}
