package dynamodb

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// LoadEstimate is what a load of a table is expected to take.
type LoadEstimate struct {
	Items, Bytes int64
	Segments     int
	// MaxRCU is the budget in read capacity units per second (0: none,
	// an on-demand table without CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU).
	MaxRCU   float64
	OnDemand bool
	// Duration is the size read at the budget (strongly consistent: 4 KB
	// per unit), or without a budget at segmentBytesPerSecond per segment,
	// whichever is slower.
	Duration time.Duration
	// TooLong: Duration comes near the stream's 24-hour retention.
	TooLong bool
}

// segmentBytesPerSecond is what one segment is assumed to read without a
// budget, for the estimate.
const segmentBytesPerSecond = 512 << 10

func (e LoadEstimate) tooLongText() string {
	return fmt.Sprintf("the load of about %d items (%d bytes) is estimated to take %s at %s, near or over the stream's 24-hour retention; "+
		"raise CDCBRIDGE_DYNAMODB_SNAPSHOT_MAX_RCU (or CDCBRIDGE_DYNAMODB_SNAPSHOT_SEGMENTS), or set CDCBRIDGE_DYNAMODB_SNAPSHOT_CONFIRM_LONG=true to run it anyway",
		e.Items, e.Bytes, e.Duration.Round(time.Minute), e.rateText())
}

func (e LoadEstimate) rateText() string {
	if e.MaxRCU > 0 {
		return fmt.Sprintf("%g RCU/s", e.MaxRCU)
	}
	return fmt.Sprintf("%d segments without a budget", e.Segments)
}

// String is the estimate in words, for check.
func (e LoadEstimate) String() string {
	return fmt.Sprintf("about %d items (%d bytes), %d segments, %s: about %s", e.Items, e.Bytes, e.Segments, e.rateText(), e.Duration.Round(time.Second))
}

func estimate(cfg Config, ti tableInfo) LoadEstimate {
	e := LoadEstimate{Items: ti.items, Bytes: ti.bytes, OnDemand: ti.onDemand, Segments: cfg.SnapshotSegments, MaxRCU: cfg.SnapshotMaxRCU}
	if e.Segments == 0 {
		e.Segments = defaultSegments(ti.items, ti.bytes)
	}
	if e.MaxRCU == 0 && !ti.onDemand {
		e.MaxRCU = math.Max(1, float64(ti.readCapacity)/2)
	}
	rate := float64(e.Segments) * segmentBytesPerSecond
	if e.MaxRCU > 0 {
		rate = math.Min(rate, e.MaxRCU*4096)
	}
	e.Duration = time.Duration(float64(ti.bytes) / rate * float64(time.Second))
	e.TooLong = e.Duration >= longLoad
	return e
}

// defaultSegments is one segment per GiB or per million items, at least 1
// and at most 16 (each segment holds up to three 1 MB pages).
func defaultSegments(items, bytes int64) int {
	n := max((bytes+(1<<30)-1)>>30, (items+999_999)/1_000_000, 1)
	return int(min(n, 16))
}

// EstimateLoad returns what a load of cfg's table would take, from
// DescribeTable. For check.
func EstimateLoad(ctx context.Context, cfg Config, ddb *dynamodb.Client) (LoadEstimate, error) {
	cfg.setDefaults()
	table := cfg.Table
	if table == "" {
		_, t, _, err := parseStreamARN(cfg.StreamARN)
		if err != nil {
			return LoadEstimate{}, err
		}
		table = t
	}
	out, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		return LoadEstimate{}, fmt.Errorf("describing table %s: %w", table, err)
	}
	return estimate(cfg, describeOutput(out)), nil
}

// SnapshotSegment is one segment in SnapshotInfo.
type SnapshotSegment struct {
	Segment int    `json:"segment"`
	State   string `json:"state"`
	Items   int64  `json:"items"`
	Pages   int64  `json:"pages"`
	Done    bool   `json:"done"`
	// LargestPage is the most items a page of the segment held.
	LargestPage int `json:"largest_page_items"`
}

// SnapshotInfo is one load in /status and `cdcbridge snapshot --status`.
type SnapshotInfo struct {
	ID             string            `json:"id"`
	Table          string            `json:"table"`
	Initial        bool              `json:"initial,omitempty"`
	Requested      string            `json:"requested"`
	State          string            `json:"state"`
	Cancelled      bool              `json:"cancelled,omitempty"`
	Started        string            `json:"started,omitempty"`
	Finished       string            `json:"finished,omitempty"`
	Note           string            `json:"note,omitempty"`
	Items          int64             `json:"items"`
	Dropped        int64             `json:"items_dropped_for_stream"`
	EstimatedItems int64             `json:"estimated_items,omitempty"`
	ItemsPerSecond float64           `json:"items_per_second,omitempty"`
	ConsumedRCU    float64           `json:"consumed_rcu"`
	RCUPerSecond   float64           `json:"consumed_rcu_per_second,omitempty"`
	Left           string            `json:"time_left,omitempty"`
	Segments       []SnapshotSegment `json:"segments"`
}

func loadInfos(jobs []*loadJob, rates map[string]*loadRate) []SnapshotInfo {
	out := []SnapshotInfo{}
	for _, j := range jobs {
		items, dropped := j.items()
		info := SnapshotInfo{ID: j.ID, Table: j.Table, Initial: j.Initial, Requested: j.Requested, State: j.State, Cancelled: j.Cancelled,
			Started: j.Started, Finished: j.Finished, Note: j.Note, Items: items, Dropped: dropped, EstimatedItems: j.EstimatedItems,
			ConsumedRCU: math.Round(j.ConsumedRCU*10) / 10, Segments: []SnapshotSegment{}}
		for i, sg := range j.Segments {
			info.Segments = append(info.Segments, SnapshotSegment{Segment: i, State: sg.State, Items: sg.Items, Pages: sg.Pages,
				Done: sg.State == loadDone, LargestPage: sg.LargestPage})
		}
		if r := rates[j.ID]; r != nil && j.State == loadReading {
			info.ItemsPerSecond = math.Round(r.items*10) / 10
			info.RCUPerSecond = math.Round(r.rcu*10) / 10
			if r.items > 0 && j.EstimatedItems > items+dropped {
				info.Left = (time.Duration(float64(j.EstimatedItems-items-dropped)/r.items) * time.Second).Round(time.Second).String()
			}
		}
		out = append(out, info)
	}
	return out
}

// publish refreshes the rates, what /status shows and the gauges.
func (l *loader) publish() {
	now := time.Now()
	l.mu.Lock()
	running := 0
	for _, j := range l.jobs {
		if j.State != loadReading {
			delete(l.rates, j.ID)
			continue
		}
		running = 1
		items, dropped := j.items()
		items += dropped
		r := l.rates[j.ID]
		if r == nil {
			l.rates[j.ID] = &loadRate{lastItems: items, lastRCU: j.ConsumedRCU, at: now}
			continue
		}
		if el := now.Sub(r.at).Seconds(); el >= 1 {
			// Smoothed over about five seconds.
			r.items = 0.8*r.items + 0.2*float64(items-r.lastItems)/el
			r.rcu = 0.8*r.rcu + 0.2*(j.ConsumedRCU-r.lastRCU)/el
			r.lastItems, r.lastRCU, r.at = items, j.ConsumedRCU, now
		}
	}
	infos := loadInfos(l.jobs, l.rates)
	l.pubSeq++
	seq := l.pubSeq
	l.mu.Unlock()
	l.s.mu.Lock()
	// Two publishes can cross between the locks: the older one's view
	// must not replace the newer one's (a finished load would stay
	// "reading" in /status).
	if seq > l.s.loadsSeq {
		l.s.loads, l.s.loadsSeq = infos, seq
		l.s.m.snapRunning.Set(float64(running))
		l.s.m.snapSegments.Set(float64(l.inProgress.Load()))
	}
	l.s.mu.Unlock()
}
