package dynamodb

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

type shardState int

const (
	stateWaiting   shardState = iota // its parent is not finished yet (or its checkpoint is not loaded), or (with leases) another instance reads it
	stateReading                     // a reader owns it (with leases: this instance holds its lease)
	stateFinished                    // read to its end and checkpointed, or skipped
	stateElsewhere                   // only in gauges and status: waiting, leasable, not leased by this instance
)

func (st shardState) String() string {
	switch st {
	case stateElsewhere:
		return "leased_elsewhere"
	case stateWaiting:
		return "waiting_parent"
	case stateReading:
		return "reading"
	case stateFinished:
		return "finished"
	}
	return "unknown"
}

// gaugeState is the state shown in gauges and status. Called with
// Source.mu held.
func (sh *shard) gaugeState() shardState {
	if sh.state == stateWaiting && sh.ready {
		return stateElsewhere
	}
	return sh.state
}

// FinishedPosition is the checkpoint position of a shard read to its end.
// It sorts after every zero-padded sequence number ('S' > '9').
const FinishedPosition = "SHARD_END"

// ckptData is the Data of a shard checkpoint.
type ckptData struct {
	// FinishedAt is when the shard was finished (read to its end, skipped
	// or given up as trimmed); finished checkpoints of shards that left
	// the stream are deleted a day later.
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// LastSequence is the padded sequence number of the shard's last
	// record, when one was read.
	LastSequence string `json:"last_sequence,omitempty"`
	// Skipped: the shard was closed when the stream was first started at
	// LATEST, so its records were never wanted.
	Skipped bool `json:"skipped,omitempty"`
	// Trimmed: the shard's remaining records expired before they were read
	// and OnTrimmed=skip gave them up.
	Trimmed bool `json:"trimmed,omitempty"`
	// LatestAt: the shard was started at LATEST at this time and had no
	// record yet. After a restart it is read from TRIM_HORIZON, dropping
	// records created well before this time.
	LatestAt time.Time `json:"latest_at,omitzero"`
	// Parent is the shard's parent, for people reading the store.
	Parent string `json:"parent,omitempty"`
}

func (d ckptData) encode() []byte {
	b, _ := json.Marshal(d)
	return b
}

func decodeCkptData(b []byte) (ckptData, error) {
	var d ckptData
	if len(b) == 0 {
		return d, nil
	}
	err := json.Unmarshal(b, &d)
	return d, err
}

// startSpec is where a reader of a shard without progress in this run
// begins.
type startSpec struct {
	after      string    // raw sequence number: AFTER_SEQUENCE_NUMBER
	latest     bool      // LATEST (a stream's first start at latest)
	latestAt   time.Time // when a LATEST start happened
	skipBefore time.Time // drop records created before (restart after a LATEST start)
}

// shard is one shard of the stream.
type shard struct {
	id     string
	parent string
	key    string

	// Guarded by Source.mu.
	state         shardState
	closed        bool // DescribeStream gave it an ending sequence number
	listed        bool // in the last full listing
	loaded        bool // its checkpoint was loaded
	hadCheckpoint bool // the store had one when it was loaded
	start         startSpec
	ready         bool   // with leases: its parent is finished, so it may be leased
	owner         string // with leases: the lease's owner at the last listing

	// tenure is this instance's lease of the shard (nil without leases or
	// when another instance holds it). Set before the shard enters the
	// tree, never changed: a new tenure gets a new shard object, so that
	// acknowledgements of an earlier tenure never move its checkpoint.
	tenure *tenure

	tracker   checkpoint.Tracker[string]
	ackSignal chan struct{} // an ack arrived (capacity 1)

	// Guarded by saveMu: what the store holds.
	saveMu sync.Mutex
	saved  string // durable position ("" none)
	// savedView is saved for status pages, which must not wait for a
	// save in progress.
	savedView atomic.Pointer[string]
	finished  bool // the finish checkpoint is durable

	// Reader progress, for metrics and status.
	newest   atomic.Int64 // unix nanoseconds of the newest record's creation time; 0 none
	caughtUp atomic.Bool  // the last read returned nothing
	lastRead atomic.Pointer[string]

	// For loads (snapgate.go): the reader has its first iterator; the
	// creation time of the newest record emitted, and the time a request
	// was sent whose answer reached the shard's end (unix nanoseconds).
	opened         atomic.Bool
	emittedCreated atomic.Int64
	tipAt          atomic.Int64
}

func newShard(arn, id, parent string) *shard {
	return &shard{id: id, parent: parent, key: shardKey(arn, id), ackSignal: make(chan struct{}, 1)}
}

// acked is called, through the event's OnAck, for each event of the shard.
func (sh *shard) acked() {
	select {
	case sh.ackSignal <- struct{}{}:
	default:
	}
}

// iteratorAge is now minus the creation time of the newest record read,
// 0 when the last read found nothing new or nothing was read.
func (sh *shard) iteratorAge(now time.Time) time.Duration {
	if sh.caughtUp.Load() {
		return 0
	}
	n := sh.newest.Load()
	if n == 0 {
		return 0
	}
	return max(0, now.Sub(time.Unix(0, n)))
}
