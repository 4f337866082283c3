package kinesis

import (
	"fmt"
	"sync"
	"time"
)

// Status is the producer's state for /status. Its parts are embedded, so
// their fields encode at the top level, in this order.
type Status struct {
	StreamInfo
	AggregationInfo
	Ready bool `json:"ready"`
	DeliveryInfo
	Fatal    string   `json:"fatal,omitempty"`
	Degraded []string `json:"degraded"`
}

// StreamInfo is the stream as configured, described and listed.
type StreamInfo struct {
	Stream             string `json:"stream"`
	StreamARN          string `json:"stream_arn,omitempty"`
	StreamStatus       string `json:"stream_status,omitempty"`
	CapacityMode       string `json:"capacity_mode,omitempty"`
	RecordDistribution string `json:"record_distribution,omitempty"`
	MaxRecordBytes     int    `json:"max_record_bytes,omitempty"`
	Shards             int    `json:"shards"`
	Ordering           string `json:"ordering"`
}

// AggregationInfo is the aggregation settings and what they delivered.
type AggregationInfo struct {
	Aggregate         bool    `json:"aggregate"`                             // records may reach the stream in KPL aggregates
	AggregateMode     string  `json:"aggregate_mode"`                        // CDCBRIDGE_KINESIS_AGGREGATE: false, true or hot
	Compression       string  `json:"aggregate_compression"`                 // CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION: none or gzip
	CompressionRatio  float64 `json:"aggregate_compression_ratio,omitempty"` // recent aggregates' size over their compressed size
	Aggregates        int64   `json:"aggregates_delivered_total"`
	AggregatedRecords int64   `json:"aggregated_records_delivered_total"` // user records inside them
}

// DeliveryInfo is the records and requests in flight, their failures and
// what was delivered.
type DeliveryInfo struct {
	InflightEvents   int       `json:"inflight_events"`
	InflightBytes    int64     `json:"inflight_bytes"`
	InflightRequests int       `json:"inflight_requests"`
	RetryingKeys     int       `json:"retrying_keys"`
	FailingRequests  int       `json:"consecutive_failed_requests"`
	LastError        string    `json:"last_error,omitempty"`
	LastErrorAt      time.Time `json:"last_error_at,omitzero"`
	ThrottledEntries int64     `json:"throttled_entries_total"`
	LastThrottleAt   time.Time `json:"last_throttle_at,omitzero"`
	DLQRecords       int64     `json:"dlq_records_total"`
	Delivered        int64     `json:"delivered_total"`
}

// statusBox holds what the loop, the control goroutine and the
// dead-letter writer report; its mutex makes it safe for all of them.
type statusBox struct {
	mu sync.Mutex
	s  Status
	// components whose trouble is current, by name
	trouble map[string]string
}

func newStatusBox(cfg Config) *statusBox {
	return &statusBox{
		s: Status{
			StreamInfo:      StreamInfo{Stream: cfg.Stream, Ordering: string(cfg.Ordering)},
			AggregationInfo: AggregationInfo{Aggregate: cfg.aggregating(), AggregateMode: cfg.AggregateMode(), Compression: cfg.AggregateCompression()},
		},
		trouble: map[string]string{},
	}
}

func (b *statusBox) update(f func(s *Status)) {
	b.mu.Lock()
	f(&b.s)
	b.mu.Unlock()
}

// setTrouble records (msg != "") or clears a degraded reason.
func (b *statusBox) setTrouble(name, msg string) {
	b.mu.Lock()
	if msg == "" {
		delete(b.trouble, name)
	} else {
		b.trouble[name] = msg
	}
	b.mu.Unlock()
}

func (b *statusBox) setFatal(err error) {
	b.mu.Lock()
	b.s.Fatal = err.Error()
	b.mu.Unlock()
}

// throttleWindow is how long a throttled entry keeps the producer degraded.
const throttleWindow = 30 * time.Second

func (b *statusBox) snapshot(ready bool, usedBytes int64, usedEvents int) Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.s
	s.Ready = ready
	s.InflightBytes = usedBytes
	s.InflightEvents = usedEvents
	s.Degraded = []string{}
	if s.Fatal != "" {
		s.Degraded = append(s.Degraded, "stopped: "+s.Fatal)
	}
	if s.FailingRequests > 0 {
		s.Degraded = append(s.Degraded, fmt.Sprintf("retries failing: %d consecutive PutRecords requests failed, last: %s", s.FailingRequests, s.LastError))
	}
	if !s.LastThrottleAt.IsZero() && time.Since(s.LastThrottleAt) < throttleWindow {
		s.Degraded = append(s.Degraded, fmt.Sprintf("throttled: Kinesis throttled entries within the last %v", throttleWindow))
	}
	for _, name := range []string{"retrying", "dlq", "summary", "shards", "mismatch"} {
		if msg := b.trouble[name]; msg != "" {
			s.Degraded = append(s.Degraded, msg)
		}
	}
	return s
}
