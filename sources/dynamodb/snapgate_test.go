package dynamodb

import (
	"testing"
	"time"
)

// TestStreamPassed holds the evidence rules of snapgate.go: what makes a
// shard count as read past a time, and what does not.
func TestStreamPassed(t *testing.T) {
	const margin = 2 * time.Second
	t0 := time.Now()
	at := t0.Add(margin) // what every shard must have passed for a page read at t0
	type sh struct {
		id, parent string
		state      shardState
		tip        time.Time // request time of the last answer that reached the shard's end
		created    time.Time // creation time of the newest record emitted
	}
	cases := []struct {
		name    string
		shards  []sh
		listing time.Time // when the last full listing was sent
		want    bool
	}{
		{"no answer yet", []sh{{id: "a", state: stateReading}}, t0, false},
		{"an answer asked before the margin", []sh{{id: "a", state: stateReading, tip: at.Add(-time.Millisecond)}}, t0, false},
		{"an answer asked after the margin", []sh{{id: "a", state: stateReading, tip: at}}, t0, true},
		{"a record created after the margin", []sh{{id: "a", state: stateReading, created: at}}, t0, true},
		{"a record created before it", []sh{{id: "a", state: stateReading, created: at.Add(-time.Second)}}, t0, false},
		{"one shard of two behind", []sh{{id: "a", state: stateReading, tip: at}, {id: "b", state: stateReading, tip: t0}}, t0, false},
		{"a child waiting for its parent", []sh{{id: "a", state: stateReading, tip: at}, {id: "b", parent: "a", state: stateWaiting}}, t0, false},
		{"a finished parent, its child past", []sh{{id: "a", state: stateFinished}, {id: "b", parent: "a", state: stateReading, tip: at}}, t0, true},
		{"a finished parent, its child behind", []sh{{id: "a", state: stateFinished}, {id: "b", parent: "a", state: stateReading, tip: t0}}, t0, false},
		{"a finished shard, children not known, no listing since", []sh{{id: "a", state: stateFinished}}, t0, false},
		{"a finished shard, a listing since showed no child", []sh{{id: "a", state: stateFinished}}, at, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Source{cfg: Config{SnapshotMargin: margin}, shards: map[string]*shard{}, lastListing: c.listing}
			s.ready.Store(true)
			for _, x := range c.shards {
				n := newShard("arn", x.id, x.parent)
				n.state = x.state
				if !x.tip.IsZero() {
					n.tipAt.Store(x.tip.UnixNano())
				}
				if !x.created.IsZero() {
					n.emittedCreated.Store(x.created.UnixNano())
				}
				s.shards[x.id] = n
			}
			if got := s.streamPassed(t0); got != c.want {
				t.Errorf("streamPassed = %v, want %v", got, c.want)
			}
		})
	}
}

// TestStreamPosition: the lowest position over the shards being read,
// their checkpoint before they emitted anything, never a finished shard's.
func TestStreamPosition(t *testing.T) {
	s := &Source{shards: map[string]*shard{}}
	if got := s.streamPosition(); got != noPosition {
		t.Errorf("no shard: %q, want %q", got, noPosition)
	}
	add := func(id string, st shardState, last, saved string) {
		n := newShard("arn", id, "")
		n.state = st
		if last != "" {
			n.lastRead.Store(&last)
		}
		if saved != "" {
			n.savedView.Store(&saved)
		}
		s.shards[id] = n
	}
	add("done", stateFinished, pad("5"), FinishedPosition)
	add("a", stateReading, pad("900"), pad("800"))
	add("b", stateReading, "", pad("700"))
	if got := s.streamPosition(); got != pad("700") {
		t.Errorf("position %q, want b's checkpoint %q", got, pad("700"))
	}
	if seq := readSequence(s.streamPosition()); !(seq > pad("700") && seq < pad("701")) {
		t.Errorf("read sequence %q does not sort between %s and the next sequence number", seq, pad("700"))
	}
}
