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
//
// The server is told no more than what the checkpoint store holds
// (saved): the store then always knows the furthest the slot may have
// been moved, so a slot found further ahead at start, as a slot of the
// same name re-created on a promoted server or moved by someone else
// would be, is recognised instead of silently trusted.
type positions struct {
	tracker *checkpoint.Tracker[uint64]

	inTx          atomic.Bool   // the decoder is between Begin and Commit
	idleCandidate atomic.Uint64 // WAL end of the last keepalive seen between transactions
	saved         atomic.Uint64 // the highest position the checkpoint store holds
	// wantKeepalive: a snapshot chunk waits for the stream to pass its
	// high mark, so the receiver asks the server for keepalives.
	wantKeepalive atomic.Bool

	mu   sync.Mutex
	safe uint64
}

func newPositions(start uint64) *positions {
	p := &positions{tracker: new(checkpoint.Tracker[uint64]), safe: start}
	p.saved.Store(start)
	return p
}

// markSaved records that the checkpoint store holds lsn.
func (p *positions) markSaved(lsn uint64) { storeMax(&p.saved, lsn) }

// storeMax raises a to v unless it is already higher.
func storeMax(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// noteKeepalive is called by the decoder, in stream order, for a keepalive
// (or an XLogData's WAL end) processed while no transaction is open.
func (p *positions) noteKeepalive(walEnd uint64) { storeMax(&p.idleCandidate, walEnd) }

// advance returns the position that is safe to confirm now, for the
// checkpoint store.
func (p *positions) advance() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if wm, ok := p.tracker.Watermark(); ok && wm > p.safe {
		p.safe = wm
	}
	// Load the candidate before looking at the tracker: every transaction
	// the decoder opened before noting the candidate is then visible to
	// Idle, so an unacknowledged one blocks the candidate.
	c := p.idleCandidate.Load()
	if c > p.safe && !p.inTx.Load() && p.tracker.Idle() {
		p.safe = c
	}
	return p.safe
}

// confirm returns the position to confirm to the server: safe, and held
// by the checkpoint store.
func (p *positions) confirm() uint64 { return min(p.advance(), p.saved.Load()) }

// current returns the last position that is (or may now be) confirmed to
// the server.
func (p *positions) current() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return min(p.safe, p.saved.Load())
}
