package postgres

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// Snapshot chunks meet the change stream in the decoder, between two marks
// that need no write to the database:
//
//   - the low mark is the decoder's place in the stream when a chunk's
//     window opens, before the chunk's transaction takes its snapshot;
//   - the chunk's transaction records pg_current_snapshot() and the WAL
//     insert position H after it: every transaction the chunk sees has
//     its commit record before H, every one it does not see is in the
//     snapshot's in-progress list or at or after its xmax;
//   - the high mark is where the stream has passed H: a Begin whose commit
//     LSN is at or after H, the end of a transaction that ends at or after
//     H, or a keepalive at or after H between transactions.
//
// Every change of the chunk's table decoded between the marks by a
// transaction the snapshot does not see carries a newer version of its row
// than the chunk: that row is dropped, and the stream delivers the row. The
// rest go out as read events once the stream has passed the high mark, so
// every change a read reflects comes before it, and every change it does
// not reflect comes after it. The read's sequence is H + ":00000000", which
// sorts the same way.
//
// A transaction can be decoded before it becomes visible (its commit
// record is in the WAL while it waits, for a synchronous standby say, to
// leave the in-progress list). One decoded before the low mark is unknown
// to the window; the window keeps the transactions decoded just before it
// opened, and a chunk whose snapshot does not see one of them is read again.
//
// A dropped row whose newer version in the stream left unchanged TOAST
// values out (an update under a key replica identity) would leave a
// consumer that never had the row without those values. Such rows are read
// again, by key, with a later chunk of the table (between that chunk's
// marks, so the same rules hold), until a read of them goes out.

// recentTxs is how many of the last decoded transactions a window checks.
const recentTxs = 256

// xidSnapshot is a pg_current_snapshot() value.
type xidSnapshot struct {
	xmin, xmax uint64
	xip        []uint64 // sorted
}

func parseXidSnapshot(s string) (xidSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return xidSnapshot{}, fmt.Errorf("snapshot %q: want xmin:xmax:xip", s)
	}
	var snap xidSnapshot
	var err error
	if snap.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return xidSnapshot{}, fmt.Errorf("snapshot %q: %w", s, err)
	}
	if snap.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return xidSnapshot{}, fmt.Errorf("snapshot %q: %w", s, err)
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return xidSnapshot{}, fmt.Errorf("snapshot %q: %w", s, err)
			}
			snap.xip = append(snap.xip, v)
		}
		slices.Sort(snap.xip)
	}
	return snap, nil
}

// visible reports whether the snapshot sees the committed transaction xid
// (a 32-bit id from the stream, taken in the epoch nearest xmax).
func (s xidSnapshot) visible(xid uint32) bool {
	full := s.xmax&^0xFFFFFFFF | uint64(xid)
	if full > s.xmax+1<<31 && full >= 1<<32 {
		full -= 1 << 32
	} else if full+1<<31 < s.xmax {
		full += 1 << 32
	}
	switch {
	case full < s.xmin:
		return true
	case full >= s.xmax:
		return false
	}
	_, found := slices.BinarySearch(s.xip, full)
	return !found
}

// window is one chunk's stretch of the stream, from its low mark until
// its rows go out (or it is discarded).
type window struct {
	relID  uint32
	opened chan struct{} // closed once the decoder placed the low mark
	// Before the chunk arrives: what the decoder saw since the low mark.
	recent  []uint32          // transactions decoded just before the low mark
	changed map[string]uint32 // row key -> xid of a change since the low mark
	partial map[string]bool   // row keys changed since the low mark with unchanged TOAST left out
	truncs  []uint32          // xids of truncates since the low mark
	chunk   *chunk
}

// chunk is a chunk's rows, built into read events, on their way to the
// decoder.
type chunk struct {
	snap   xidSnapshot
	high   uint64 // the high mark: the stream must pass this LSN
	events []*cdc.Event
	index  map[string]int // row key -> position in events
	keys   [][][]byte     // each event's key, as text
	// reread: the keys of rows dropped for a newer version without
	// their unchanged TOAST values; they are read again.
	reread [][][]byte
	// done is called by the decoder once the rows went out: emitted is
	// how many; again means the chunk must be read again (nothing went
	// out).
	done func(emitted int, again bool)
}

// drop removes the row with key from the chunk; partial: the newer
// version left unchanged TOAST values out, so the row is read again.
func (c *chunk) drop(key string, partial bool) {
	if i, ok := c.index[key]; ok {
		c.events[i] = nil
		delete(c.index, key)
		if partial {
			c.reread = append(c.reread, c.keys[i])
		}
	}
}

func (c *chunk) dropAll() {
	clear(c.events)
	clear(c.index)
}

// highMark is H made comparable with the ends of records: an insert
// position at the start of a page points past the page's header (at most
// 40 bytes), where no record can end, so it counts from the page's start.
func highMark(insertLSN uint64, blockSize uint64) uint64 {
	if off := insertLSN % blockSize; off <= 40 {
		return insertLSN - off
	}
	return insertLSN
}

// marks is the decoder's part: the windows open now, in the order they
// opened, and the stream's progress.
type marks struct {
	windows []*window
	recent  [recentTxs]uint32
	nRecent int
	// passed: every transaction whose commit record starts before it has
	// been decoded.
	passed uint64
	// wantKeepalive asks the receiver for keepalives while a chunk waits
	// for its high mark on a quiet stream.
	wantKeepalive *atomic.Bool
}

// noteTx records a decoded transaction.
func (m *marks) noteTx(xid uint32) {
	m.recent[m.nRecent%recentTxs] = xid
	m.nRecent++
}

// openWindow places a window's low mark.
func (d *decoder) openWindow(w *window) {
	n := min(d.marks.nRecent, recentTxs)
	w.recent = make([]uint32, 0, n)
	for i := range n {
		w.recent = append(w.recent, d.marks.recent[i])
	}
	w.changed = make(map[string]uint32)
	w.partial = make(map[string]bool)
	d.marks.windows = append(d.marks.windows, w)
	close(w.opened)
}

// discardWindow removes a window whose chunk will not come.
func (d *decoder) discardWindow(w *window) {
	d.marks.windows = slices.DeleteFunc(d.marks.windows, func(x *window) bool { return x == w })
	d.updateKeepaliveWish()
}

// chunkArrived gives a window its chunk, drops the rows that changed since
// the low mark in transactions the chunk's snapshot does not see, and
// emits the chunk if the stream has passed its high mark.
func (d *decoder) chunkArrived(ctx context.Context, w *window, c *chunk) error {
	for _, xid := range w.recent {
		if !c.snap.visible(xid) {
			d.log.Info("snapshot: a transaction decoded before the chunk's low mark was not yet visible to its query: reading the chunk again", "xid", xid)
			d.discardWindow(w)
			c.done(0, true)
			return nil
		}
	}
	for key, xid := range w.changed {
		if !c.snap.visible(xid) {
			c.drop(key, w.partial[key])
		}
	}
	for _, xid := range w.truncs {
		if !c.snap.visible(xid) {
			c.dropAll()
		}
	}
	w.recent, w.changed, w.partial, w.truncs = nil, nil, nil, nil
	w.chunk = c
	return d.emitChunks(ctx)
}

// noteRowChange applies a streamed change of a row to the open windows.
func (d *decoder) noteRowChange(rel *relation, e *cdc.Event) {
	for _, w := range d.marks.windows {
		if w.relID != rel.id {
			continue
		}
		key, partial := string(e.Key), len(e.UnchangedToast) > 0
		if w.chunk == nil {
			w.changed[key] = d.xid
			if partial {
				w.partial[key] = true
			}
		} else if !w.chunk.snap.visible(d.xid) {
			w.chunk.drop(key, partial)
		}
	}
}

// noteTruncate applies a streamed truncate to the open windows.
func (d *decoder) noteTruncate(rel *relation) {
	for _, w := range d.marks.windows {
		if w.relID != rel.id {
			continue
		}
		if w.chunk == nil {
			w.truncs = append(w.truncs, d.xid)
		} else if !w.chunk.snap.visible(d.xid) {
			w.chunk.dropAll()
		}
	}
}

// streamPassed notes that every transaction whose commit record starts
// before lsn has been decoded, and emits the chunks whose high mark that
// passes. Only called between transactions.
func (d *decoder) streamPassed(ctx context.Context, lsn uint64) error {
	if lsn > d.marks.passed {
		d.marks.passed = lsn
	}
	if len(d.marks.windows) == 0 {
		return nil
	}
	return d.emitChunks(ctx)
}

// emitChunks emits, in window order, the chunks whose high mark the
// stream has passed.
func (d *decoder) emitChunks(ctx context.Context) error {
	for len(d.marks.windows) > 0 && !d.inTx {
		w := d.marks.windows[0]
		c := w.chunk
		if c == nil || d.marks.passed < c.high {
			break
		}
		d.marks.windows = d.marks.windows[1:]
		emitted := 0
		for _, e := range c.events {
			if e == nil {
				continue
			}
			d.metrics.received[cdc.OpRead].Inc()
			if err := sinkError(ctx, d.emit(ctx, e)); err != nil {
				return err
			}
			emitted++
		}
		c.done(emitted, false)
	}
	d.updateKeepaliveWish()
	return nil
}

// updateKeepaliveWish asks for keepalives while the first window's chunk
// waits for its high mark.
func (d *decoder) updateKeepaliveWish() {
	if d.marks.wantKeepalive == nil {
		return
	}
	want := len(d.marks.windows) > 0 && d.marks.windows[0].chunk != nil
	if d.marks.wantKeepalive.Load() != want {
		d.marks.wantKeepalive.Store(want)
	}
}
