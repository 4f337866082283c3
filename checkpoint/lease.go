package checkpoint

import (
	"errors"
	"time"
)

// Leases let several instances share the keys of a scope (the shards of a
// DynamoDB stream): a key is read by the instance that holds its lease.
// A store shared between instances keeps them beside its checkpoints
// (checkpoint/dynamodb); the sources that share keys say which operations
// they need.

// ErrLeaseLost is returned (wrapped) when the caller no longer owns a
// lease it renews, releases or checkpoints: another instance took it. A
// checkpoint refused for that reason also matches ErrStale.
var ErrLeaseLost = errors.New("the lease is held by another owner")

// ErrLeaseChanged is returned (wrapped) by a take when the lease changed
// since it was read: another instance took or renewed it first.
var ErrLeaseChanged = errors.New("the lease changed since it was read")

// Lease is one key of a scope as a lease store lists it.
type Lease struct {
	Key       string
	Owner     string // "" when the lease is free
	Counter   int64  // 0 when the key was never leased
	Parent    string
	ExpiresAt time.Time
	// Checkpoint is the key's checkpoint; HasCheckpoint is false when
	// none was saved yet.
	Checkpoint    Checkpoint
	HasCheckpoint bool
}
