// Package fence keeps a process from sending the records of a partition (a
// DynamoDB shard, a PostgreSQL slot) at a time when another process may
// already own that partition and send them too.
//
// A source that owns partitions through leases knows, for each one, until
// when its ownership is certain: the send time of its last successful lease
// renewal plus the lease period (nobody can take the lease over before). It
// keeps a Hold per partition with that time. The Gate wraps the HTTP client
// that sends records downstream (Client): cmd/cdcbridge puts it into the
// Kinesis client for PutRecords, so every attempt passes through it. The
// sources take holds and the sink's client is gated, so the package
// belongs to neither.
//
// Guarantees, for the attempts that pass through Client:
//   - While a hold is busy (its partition has records handed to the sink and
//     not yet accepted), no attempt starts at or after the hold's time minus
//     the gate's margin, and every attempt's context ends by then: an owner
//     whose renewals stop cannot send after its lease may have moved.
//   - Revoke (ownership known lost) ends every attempt in flight at once and
//     lets no new one start while the hold is busy.
//   - A hold that is not busy never delays or refuses anything.
//
// The gate cannot take records back from the sink: once a busy hold's time
// has passed, the sink's queued records of that partition stay unsendable
// until the owner renews (Extend) or the process stops. Owners that learn
// the partition is gone for good must therefore stop the process (see
// Stuck), so that a restart continues from the checkpoints.
package fence

import (
	"errors"
	"slices"
	"sync"
	"time"
)

// ErrFenced is the error of an attempt the gate refused or cut short, and
// the one a source wraps when it stops because records of a partition it
// lost are stuck in the sink (see Stuck).
var ErrFenced = errors.New("fenced: a partition whose records are in flight may belong to another instance now")

// DefaultMargin is the margin of New(0): how long before a hold's time the
// gate closes, for the clock rates of two hosts and the server's processing
// of a request that was sent just before.
const DefaultMargin = 250 * time.Millisecond

// Gate bounds when attempts may run. A nil *Gate fences nothing: its holds
// are no-ops and its Client is the base client.
type Gate struct {
	margin time.Duration

	mu    sync.Mutex
	holds map[*Hold]struct{}
	calls map[*call]struct{}
	now   func() time.Time
}

// New returns a gate that closes margin before the earliest busy hold's
// time (DefaultMargin when margin is 0).
func New(margin time.Duration) *Gate {
	if margin <= 0 {
		margin = DefaultMargin
	}
	return &Gate{margin: margin, holds: map[*Hold]struct{}{}, calls: map[*call]struct{}{}, now: time.Now}
}

// Margin returns how long before a hold's time the gate closes.
func (g *Gate) Margin() time.Duration {
	if g == nil {
		return 0
	}
	return g.margin
}

// Hold is one partition's claim on the gate.
type Hold struct {
	g       *Gate
	name    string
	busy    func() bool
	until   time.Time
	revoked bool
	closed  bool
}

// Hold registers a partition whose ownership is certain until until. busy
// reports whether records of the partition are in the sink and not yet
// accepted; it is called often and must be cheap and must not call the
// gate. The hold bounds attempts only while busy returns true.
func (g *Gate) Hold(name string, until time.Time, busy func() bool) *Hold {
	if g == nil {
		return nil
	}
	h := &Hold{g: g, name: name, busy: busy, until: until}
	g.mu.Lock()
	g.holds[h] = struct{}{}
	g.mu.Unlock()
	return h
}

// Extend moves the hold's time to until (never backwards). It does nothing
// once the hold was revoked or closed.
func (h *Hold) Extend(until time.Time) {
	if h == nil {
		return
	}
	h.g.mu.Lock()
	if !h.revoked && !h.closed && until.After(h.until) {
		h.until = until
	}
	h.g.mu.Unlock()
}

// Until returns the hold's time.
func (h *Hold) Until() time.Time {
	if h == nil {
		return time.Time{}
	}
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	return h.until
}

// Revoke records that the partition's ownership is lost now: the hold's
// time becomes now and every attempt in flight is cancelled with
// ErrFenced, since one of them may carry the partition's records.
func (h *Hold) Revoke() {
	if h == nil {
		return
	}
	g := h.g
	g.mu.Lock()
	if h.closed {
		g.mu.Unlock()
		return
	}
	h.revoked = true
	if now := g.now(); h.until.After(now) {
		h.until = now
	}
	calls := make([]*call, 0, len(g.calls))
	for c := range g.calls {
		calls = append(calls, c)
	}
	g.mu.Unlock()
	for _, c := range calls {
		c.cancel(ErrFenced)
	}
}

// Close removes the hold: the partition has nothing in flight any more, or
// the process is stopping.
func (h *Hold) Close() {
	if h == nil {
		return
	}
	h.g.mu.Lock()
	h.closed = true
	delete(h.g.holds, h)
	h.g.mu.Unlock()
}

// Stuck reports whether the hold is busy and its time (less the margin)
// has passed: its partition's records can no longer be sent.
func (h *Hold) Stuck() bool {
	if h == nil {
		return false
	}
	h.g.mu.Lock()
	until := h.until
	h.g.mu.Unlock()
	return !h.g.now().Before(until.Add(-h.g.margin)) && h.busy()
}

// Busy reports whether the hold's partition has records in flight.
func (h *Hold) Busy() bool { return h != nil && h.busy() }

// Deadline returns the time by which every attempt must end: the earliest
// time, less the margin, of the busy holds. ok is false when no hold is
// busy.
func (g *Gate) Deadline() (deadline time.Time, ok bool) {
	if g == nil {
		return time.Time{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.deadlineLocked()
}

func (g *Gate) deadlineLocked() (time.Time, bool) {
	var min time.Time
	ok := false
	for h := range g.holds {
		if ok && !h.until.Before(min) {
			continue // cannot lower the minimum: spare the busy check
		}
		if h.busy() {
			min, ok = h.until, true
		}
	}
	if !ok {
		return time.Time{}, false
	}
	return min.Add(-g.margin), true
}

// Blocked returns the names of the busy holds whose time has passed, which
// keep the gate closed (for status pages), sorted.
func (g *Gate) Blocked() []string {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var out []string
	for h := range g.holds {
		if !now.Before(h.until.Add(-g.margin)) && h.busy() {
			out = append(out, h.name)
		}
	}
	slices.Sort(out)
	return out
}
