package kinesis

import (
	"time"

	"github.com/cdcbridge/cdcbridge/hashkey"
)

// keyState is the queue of one partition key's records (with
// OrderingNone, of a single record). Its head records are in flight
// (sent > 0), waiting for a retry, parked (dead-letter write, shard map
// refresh) or ready in its shard's list; never two of these at once, so a
// key has at most one request (one entry) in flight.
type keyState struct {
	pk         string
	hash       hashkey.Key
	head, tail *record
	n          int   // queued records
	bytes      int64 // their sizes

	sent    int       // head records in flight, all in one entry
	ready   bool      // in a shard's ready list
	parked  bool      // waiting for the dead-letter writer or a new shard map
	retryAt time.Time // in the retry heap until then
	inRetry bool
	urgent  bool // goes out without waiting for the linger

	shard     *shard // predicted shard, valid for mapVersion
	mapVer    uint64
	nextReady *keyState
	heapIdx   int
}

func (k *keyState) push(r *record) {
	r.key = k
	r.next = nil
	if k.tail == nil {
		k.head = r
	} else {
		k.tail.next = r
	}
	k.tail = r
	k.n++
	k.bytes += int64(r.size())
}

func (k *keyState) pop() *record {
	r := k.head
	k.head = r.next
	if k.head == nil {
		k.tail = nil
	}
	r.next = nil
	k.n--
	k.bytes -= int64(r.size())
	return r
}

// idle reports whether the key holds nothing and can be forgotten.
func (k *keyState) idle() bool {
	return k.head == nil && k.sent == 0 && !k.ready && !k.parked && !k.inRetry
}

// tableState enforces the truncate barrier of one table (Event.Subject):
// a truncate is released once every earlier event of the table is
// accepted, and later events wait until it is accepted. Events are held in
// arrival order while a barrier is pending.
type tableState struct {
	name    string
	active  int  // released, not yet accepted
	barrier bool // a released truncate is not yet accepted
	waiting []*record
}

// admit takes a new event of the table and returns whether it may go now.
func (t *tableState) admit(r *record) bool {
	if len(t.waiting) == 0 && !t.barrier && !(r.truncate && t.active > 0) {
		t.active++
		if r.truncate {
			t.barrier = true
		}
		return true
	}
	t.waiting = append(t.waiting, r)
	return false
}

// done notes an accepted event and returns the events it releases.
func (t *tableState) done(r *record, release func(*record)) {
	t.active--
	if r.truncate {
		t.barrier = false
	}
	for len(t.waiting) > 0 && !t.barrier {
		h := t.waiting[0]
		if h.truncate && t.active > 0 {
			break
		}
		t.waiting[0] = nil
		t.waiting = t.waiting[1:]
		t.active++
		if h.truncate {
			t.barrier = true
		}
		release(h)
	}
	if len(t.waiting) == 0 {
		t.waiting = nil
	}
}

func (t *tableState) idle() bool { return t.active == 0 && len(t.waiting) == 0 }

// keyTable is the loop's per-key and per-table state: the partition
// keys with queued or unfinished records, the tables whose truncate
// barrier holds events or counts released ones, and idle keys kept for
// reuse.
type keyTable struct {
	byKey  bool                   // OrderingKey: a partition key's records share one keyState
	keys   map[string]*keyState   // by partition key, with byKey
	tables map[string]*tableState // by Event.Subject, while not idle
	free   []*keyState            // forgotten keys, for reuse
}

func newKeyTable(byKey bool) keyTable {
	return keyTable{byKey: byKey, keys: map[string]*keyState{}, tables: map[string]*tableState{}}
}

// table returns the state of table sub, new when the table is idle.
func (t *keyTable) table(sub string) *tableState {
	tb := t.tables[sub]
	if tb == nil {
		tb = &tableState{name: sub}
		t.tables[sub] = tb
	}
	return tb
}

// tableDone notes r accepted in its table tb and passes the events it
// releases to release; an idle table is dropped.
func (t *keyTable) tableDone(tb *tableState, r *record, release func(*record)) {
	tb.done(r, release)
	if tb.idle() {
		delete(t.tables, tb.name)
	}
}

// key returns r's key: its partition key's with byKey, else a new one.
func (t *keyTable) key(r *record) *keyState {
	if !t.byKey {
		return t.newKey(r)
	}
	k := t.keys[r.pk]
	if k == nil {
		k = t.newKey(r)
		t.keys[r.pk] = k
	}
	return k
}

func (t *keyTable) newKey(r *record) *keyState {
	var k *keyState
	if n := len(t.free); n > 0 {
		k = t.free[n-1]
		t.free[n-1] = nil
		t.free = t.free[:n-1]
	} else {
		k = new(keyState)
	}
	k.pk = r.pk
	k.hash = r.hash
	return k
}

// forget drops an idle key.
func (t *keyTable) forget(k *keyState) {
	if t.byKey {
		delete(t.keys, k.pk)
	}
	*k = keyState{}
	if len(t.free) < 4096 {
		t.free = append(t.free, k)
	}
}

// takeIntake moves the records Put since the last look into their tables
// and keys.
func (l *loop) takeIntake() {
	in, usedB, usedE := l.in.take(l.spare)
	if len(in) > 0 {
		l.m.inflightBytes.Set(float64(usedB))
		l.m.inflightEv.Set(float64(usedE))
	}
	for _, r := range in {
		l.admitTable(r)
	}
	clear(in)
	l.spare = in[:0]
}

// admitTable applies the truncate barrier of the record's table.
func (l *loop) admitTable(r *record) {
	if sub := r.subject; sub != "" {
		t := l.keys.table(sub)
		r.table = t
		if !t.admit(r) {
			return
		}
	}
	l.enqueue(r)
}

// enqueue appends r to its key's queue; a key that was idle becomes ready.
func (l *loop) enqueue(r *record) {
	k := l.keys.key(r)
	wasIdle := k.idle()
	k.push(r)
	switch {
	case wasIdle:
		l.makeReady(k, false)
	case k.ready:
		l.ready.grow(r)
	}
}
