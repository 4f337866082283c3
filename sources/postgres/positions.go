package postgres

import (
	"sync"
	"sync/atomic"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// positions computes the LSN to confirm to the server for one replication
// session. It is shared by the decoder (which notes where the stream is
// between transactions) and the status sender (which reads it), so it is
// safe for concurrent use.
//
// The confirmed position is, never moving backwards, the larger of
//   - the tracker's watermark: the end LSN of the last transaction whose
//     every event was acknowledged (and every earlier one too), and
//   - when nothing is outstanding (every opened transaction sealed and
//     acknowledged, none open), the WAL end of the last keepalive that
//     arrived between transactions. Everything the server sent before
//     that keepalive is then acknowledged, and whatever it sends later
//     commits at or after that point, so a restart from there skips
//     nothing. This is what lets an idle or fully filtered slot advance.
type positions struct {
	tracker *checkpoint.Tracker[uint64]

	inTx          atomic.Bool   // the decoder is between Begin and Commit
	idleCandidate atomic.Uint64 // WAL end of the last keepalive seen between transactions

	mu        sync.Mutex
	confirmed uint64
}

func newPositions(start uint64) *positions {
	return &positions{tracker: new(checkpoint.Tracker[uint64]), confirmed: start}
}

// noteKeepalive is called by the decoder, in stream order, for a keepalive
// (or an XLogData's WAL end) processed while no transaction is open.
func (p *positions) noteKeepalive(walEnd uint64) {
	for {
		cur := p.idleCandidate.Load()
		if walEnd <= cur || p.idleCandidate.CompareAndSwap(cur, walEnd) {
			return
		}
	}
}

// confirm returns the position that is safe to confirm now.
func (p *positions) confirm() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if wm, ok := p.tracker.Watermark(); ok && wm > p.confirmed {
		p.confirmed = wm
	}
	// Load the candidate before looking at the tracker: every transaction
	// the decoder opened before noting the candidate is then visible to
	// Idle, so an unacknowledged one blocks the candidate.
	c := p.idleCandidate.Load()
	if c > p.confirmed && !p.inTx.Load() && p.tracker.Idle() {
		p.confirmed = c
	}
	return p.confirmed
}

// current returns the last computed confirmed position.
func (p *positions) current() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirmed
}
