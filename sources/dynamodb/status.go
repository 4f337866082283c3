package dynamodb

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// health keeps the reasons the source is degraded. A reason stays for
// degradedFor after it was last reported, so that a retry loop that keeps
// failing keeps it, and one that recovered drops it without bookkeeping.
type health struct {
	mu      sync.Mutex
	reasons map[string]healthEntry
}

type healthEntry struct {
	at  time.Time
	err string
}

const degradedFor = time.Minute

func (h *health) set(reason string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reasons == nil {
		h.reasons = map[string]healthEntry{}
	}
	e := healthEntry{at: time.Now()}
	if err != nil {
		e.err = err.Error()
	}
	h.reasons[reason] = e
}

func (h *health) list(now time.Time) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for r, e := range h.reasons {
		if now.Sub(e.at) > degradedFor {
			delete(h.reasons, r)
			continue
		}
		if e.err != "" {
			r += " (" + e.err + ")"
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Status is the source's state for /status.
type Status struct {
	Role         string `json:"role"`
	Ready        bool   `json:"ready"`
	StreamARN    string `json:"stream_arn,omitempty"`
	Table        string `json:"table,omitempty"`
	Region       string `json:"region,omitempty"`
	ViewType     string `json:"stream_view_type,omitempty"`
	StreamStatus string `json:"stream_status,omitempty"`

	ShardsReading       int `json:"shards_reading"`
	ShardsWaitingParent int `json:"shards_waiting_parent"`
	ShardsFinished      int `json:"shards_finished"`
	// Shards lists the shards not finished yet.
	Shards []ShardStatus `json:"shards,omitempty"`

	IteratorAgeSeconds float64   `json:"iterator_age_seconds"`
	LagSeconds         float64   `json:"lag_seconds"`
	Pending            int       `json:"pending_events"`
	LastDiscovery      time.Time `json:"last_discovery,omitzero"`
	Degraded           []string  `json:"degraded"`

	// Leases is set when the shards are shared through leases.
	Leases *LeaseStatus `json:"leases,omitempty"`
	// ShardsLeasedElsewhere counts shards that may be read and whose lease
	// another instance holds (or nobody yet).
	ShardsLeasedElsewhere int `json:"shards_leased_elsewhere"`

	// Snapshots are the loads of the table's existing items, the last
	// finished ones included.
	Snapshots []SnapshotInfo `json:"snapshots,omitempty"`
}

// ShardStatus is one shard in Status.
type ShardStatus struct {
	ID                 string  `json:"id"`
	Parent             string  `json:"parent,omitempty"`
	State              string  `json:"state"`
	Closed             bool    `json:"closed"`
	LastRead           string  `json:"last_read,omitempty"`
	Checkpoint         string  `json:"checkpoint,omitempty"`
	Pending            int     `json:"pending_events"`
	IteratorAgeSeconds float64 `json:"iterator_age_seconds"`
	// Owner is the lease's owner at the last listing, and Lease this
	// instance's hold on it (held, starting, lapsed), with leases.
	Owner string `json:"lease_owner,omitempty"`
	Lease string `json:"lease,omitempty"`
}

// Status returns the source's state (a Status).
func (s *Source) Status() any {
	now := time.Now()
	st := Status{Role: "active", Ready: s.Ready(), Degraded: s.health.list(now)}
	s.mu.Lock()
	st.StreamARN, st.Table, st.Region, st.ViewType = s.info.arn, s.info.table, s.info.region, s.info.viewType
	st.StreamStatus, st.LastDiscovery = s.streamStatus, s.lastDiscovery
	st.Snapshots = slices.Clone(s.loads)
	shards := make([]*shard, 0, len(s.shards))
	states := make([]shardState, 0, len(s.shards))
	closed := make([]bool, 0, len(s.shards))
	owners := make([]string, 0, len(s.shards))
	for _, sh := range s.shards {
		shards = append(shards, sh)
		states = append(states, sh.gaugeState())
		closed = append(closed, sh.closed)
		owners = append(owners, sh.owner)
	}
	s.mu.Unlock()
	for i, sh := range shards {
		switch states[i] {
		case stateReading:
			st.ShardsReading++
		case stateWaiting:
			st.ShardsWaitingParent++
		case stateElsewhere:
			st.ShardsLeasedElsewhere++
		case stateFinished:
			st.ShardsFinished++
			continue
		}
		ss := ShardStatus{ID: sh.id, Parent: sh.parent, State: states[i].String(), Closed: closed[i],
			Pending: sh.tracker.Pending(), IteratorAgeSeconds: sh.iteratorAge(now).Seconds(), Owner: owners[i]}
		if s.lm != nil {
			ss.Lease = s.lm.tenureStatus(sh)
		}
		if p := sh.lastRead.Load(); p != nil {
			ss.LastRead = *p
		}
		if p := sh.savedView.Load(); p != nil {
			ss.Checkpoint = *p
		}
		st.Pending += ss.Pending
		st.IteratorAgeSeconds = max(st.IteratorAgeSeconds, ss.IteratorAgeSeconds)
		st.Shards = append(st.Shards, ss)
	}
	slices.SortFunc(st.Shards, func(a, b ShardStatus) int { return strings.Compare(a.ID, b.ID) })
	if t, ok := s.OldestUnacked(); ok {
		st.LagSeconds = max(0, now.Sub(t).Seconds())
	}
	if s.lm != nil {
		st.Leases = s.lm.status()
		if st.Leases.Held+st.Leases.Lapsed+st.Leases.Starting == 0 {
			st.Role = "standby" // every shard is read by other instances
		}
		if len(st.Leases.FencedSending) > 0 {
			st.Degraded = append(st.Degraded, "sends paused: leases ran out before their renewal ("+strings.Join(st.Leases.FencedSending, ", ")+")")
		}
	}
	if st.Degraded == nil {
		st.Degraded = []string{}
	}
	return st
}

// OldestUnacked returns the creation time of the oldest record read and
// not yet acknowledged, over all shards.
func (s *Source) OldestUnacked() (time.Time, bool) {
	var oldest time.Time
	found := false
	for _, sh := range s.shardList() {
		if t, ok := sh.tracker.Oldest(); ok && (!found || t.Before(oldest)) {
			oldest, found = t, true
		}
	}
	return oldest, found
}

func (s *Source) shardList() []*shard {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*shard, 0, len(s.shards))
	for _, sh := range s.shards {
		out = append(out, sh)
	}
	return out
}

func (s *Source) iteratorAge() float64 {
	now := time.Now()
	var age time.Duration
	for _, sh := range s.shardList() {
		age = max(age, sh.iteratorAge(now))
	}
	return age.Seconds()
}

func (s *Source) lagSeconds() float64 {
	t, ok := s.OldestUnacked()
	if !ok || t.IsZero() {
		return 0
	}
	return max(0, time.Since(t).Seconds())
}
