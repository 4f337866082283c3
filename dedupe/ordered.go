package dedupe

import "time"

// ordered is a map whose entries are also kept in a list from least to most
// recently written, so the oldest entry is found and dropped in O(1). The
// list lives in a slice linked by index and reuses freed slots: after
// warm-up, inserting allocates only the key.
type ordered struct {
	index   map[string]int
	entries []entry
	oldest  int // -1 when empty
	newest  int // -1 when empty
	free    int // head of the free slots, linked through next; -1 when none
}

type entry struct {
	key   string
	value string
	at    time.Duration // when written, on the Filter's clock
	prev  int           // toward oldest
	next  int           // toward newest
}

func newOrdered() ordered {
	return ordered{index: make(map[string]int), oldest: -1, newest: -1, free: -1}
}

func (o *ordered) len() int { return len(o.index) }

// lookup takes the key as bytes so that a miss allocates nothing.
func (o *ordered) lookup(key []byte) (int, bool) {
	i, ok := o.index[string(key)]
	return i, ok
}

func (o *ordered) insert(key, value string, at time.Duration) {
	e := entry{key: key, value: value, at: at, prev: o.newest, next: -1}
	var i int
	if o.free >= 0 {
		i = o.free
		o.free = o.entries[i].next
		o.entries[i] = e
	} else {
		i = len(o.entries)
		o.entries = append(o.entries, e)
	}
	o.index[key] = i
	o.link(i)
}

// update rewrites entry i and makes it the newest.
func (o *ordered) update(i int, value string, at time.Duration) {
	o.entries[i].value = value
	o.entries[i].at = at
	if i == o.newest {
		return
	}
	o.unlink(i)
	o.entries[i].prev = o.newest
	o.entries[i].next = -1
	o.link(i)
}

// removeOldest drops the oldest entry; the list must not be empty.
func (o *ordered) removeOldest() {
	i := o.oldest
	delete(o.index, o.entries[i].key)
	o.unlink(i)
	o.entries[i] = entry{next: o.free}
	o.free = i
}

// link appends i, whose prev is already o.newest, at the newest end.
func (o *ordered) link(i int) {
	if o.newest >= 0 {
		o.entries[o.newest].next = i
	} else {
		o.oldest = i
	}
	o.newest = i
}

func (o *ordered) unlink(i int) {
	e := &o.entries[i]
	if e.prev >= 0 {
		o.entries[e.prev].next = e.next
	} else {
		o.oldest = e.next
	}
	if e.next >= 0 {
		o.entries[e.next].prev = e.prev
	} else {
		o.newest = e.prev
	}
}

// expire drops the entries written before cutoff.
func (o *ordered) expire(cutoff time.Duration) {
	for o.oldest >= 0 && o.entries[o.oldest].at < cutoff {
		o.removeOldest()
	}
}
