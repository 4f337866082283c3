package kinesis

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Ordering selects what order the producer keeps.
type Ordering string

const (
	// OrderingKey keeps each partition key's records in Put order (default).
	OrderingKey Ordering = "key"
	// OrderingNone sends records as they come, retries them independently
	// and puts several records of one key in one request: a key's records
	// can reach the stream out of order after a partial failure or retry.
	OrderingNone Ordering = "none"
)

// Oversize policies.
const (
	OversizeDLQ  = "dlq"
	OversizeFail = "fail"
)

// Kinesis limits.
const (
	maxRecordsPerRequest   = 500
	defaultRequestBytes    = 5 << 20
	maxRequestBytes        = 10 << 20
	defaultRecordKiB       = 1024
	shardBytesPerSecond    = 1 << 20 // 1 MiB/s; AWS documents "1 MB" and enforces MiB
	shardRecordsPerSecond  = 1000
	defaultMaxInFlightByte = 64 << 20
)

// Config configures a Producer. Zero fields take the documented defaults.
type Config struct {
	// Stream is the stream's name or ARN. Requests carry StreamName when
	// given a name and StreamARN when given an ARN.
	Stream string
	// Linger is the longest a record waits for its batch to fill: 50ms.
	Linger time.Duration
	// MaxInFlight is the number of concurrent PutRecords requests: 8.
	MaxInFlight int
	// Aggregate packs user records into KPL aggregated records.
	Aggregate bool
	// AggregateHot (with Aggregate false) sends records plain, except
	// that a key with two or more records queued sends its queued run as
	// one aggregate: a hot key moves a run per round trip, and consumers
	// see aggregates only for hot keys (CDCBRIDGE_KINESIS_AGGREGATE=hot).
	AggregateHot bool
	// AggregateMaxBytes caps an aggregate's size (partition key
	// included); default and upper bound: the stream's record limit.
	// With CompressAggregates it caps the aggregate before compression.
	AggregateMaxBytes int
	// CompressAggregates sends every aggregate gzipped (see package kpl):
	// a run of one key's changes shrinks to a small part of its size, so
	// a hot key is no longer held to its shard's 1 MiB/s of envelopes.
	// Plain records stay plain. Consumers must gunzip before they
	// de-aggregate (CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip).
	CompressAggregates bool
	// ConnectTimeout bounds dialing plus the TLS handshake: 2s.
	ConnectTimeout time.Duration
	// RequestTimeout bounds one request attempt, connecting included: 10s.
	RequestTimeout time.Duration
	// Ordering: OrderingKey (default) or OrderingNone.
	Ordering Ordering
	// Oversize: OversizeDLQ (default) or OversizeFail, for records over
	// the stream's limit and records Kinesis rejects as invalid.
	Oversize string
	// DLQDir holds the dead-letter files: /var/lib/cdcbridge/dlq.
	DLQDir string
	// DLQFailureLimit is how long writing a dead-letter line may keep
	// failing (disk full, directory gone or unwritable) before the
	// producer stops with an error: 30s. Until then it retries; it never
	// acknowledges an event whose line is not on disk.
	DLQFailureLimit time.Duration
	// MaxInFlightBytes bounds the memory of events accepted by Put and not
	// yet acknowledged: 64 MiB.
	MaxInFlightBytes int64
	// MaxInFlightEvents bounds their number: 100,000.
	MaxInFlightEvents int
	// MaxRequestBytes bounds one PutRecords request (data plus partition
	// keys): 5 MiB; at most 10 MiB, for streams that allow it.
	MaxRequestBytes int
	// ShardHeadroom is the fraction of a shard's write limits (1 MiB/s,
	// 1000 records/s) the producer plans to use: 0.9.
	ShardHeadroom float64
	// SummaryInterval is how often DescribeStreamSummary is read again: 60s.
	SummaryInterval time.Duration
	// RetryBase and RetryMax shape the exponential backoff with full
	// jitter between attempts: 100ms and 10s.
	RetryBase, RetryMax time.Duration
	// Heartbeat, when set, is called on every iteration of the main loop,
	// including while it waits (at least once a second).
	Heartbeat func()
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Linger, 50*time.Millisecond)
	def(&c.ConnectTimeout, 2*time.Second)
	def(&c.RequestTimeout, 10*time.Second)
	def(&c.SummaryInterval, 60*time.Second)
	def(&c.RetryBase, 100*time.Millisecond)
	def(&c.RetryMax, 10*time.Second)
	def(&c.DLQFailureLimit, 30*time.Second)
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 8
	}
	if c.Ordering == "" {
		c.Ordering = OrderingKey
	}
	if c.Oversize == "" {
		c.Oversize = OversizeDLQ
	}
	if c.DLQDir == "" {
		c.DLQDir = "/var/lib/cdcbridge/dlq"
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = defaultMaxInFlightByte
	}
	if c.MaxInFlightEvents == 0 {
		c.MaxInFlightEvents = 100_000
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = defaultRequestBytes
	}
	if c.ShardHeadroom == 0 {
		c.ShardHeadroom = 0.9
	}
}

// validate sets the defaults and reports every invalid field.
func (c *Config) validate() error {
	c.setDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if strings.TrimSpace(c.Stream) == "" {
		bad("Stream is required")
	}
	for name, d := range map[string]time.Duration{
		"Linger": c.Linger, "ConnectTimeout": c.ConnectTimeout, "RequestTimeout": c.RequestTimeout,
		"SummaryInterval": c.SummaryInterval, "RetryBase": c.RetryBase, "RetryMax": c.RetryMax,
		"DLQFailureLimit": c.DLQFailureLimit,
	} {
		if d < 0 {
			bad("%s must not be negative (got %v)", name, d)
		}
	}
	if c.RetryMax < c.RetryBase {
		bad("RetryMax (%v) must not be below RetryBase (%v)", c.RetryMax, c.RetryBase)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 256 {
		bad("MaxInFlight must be between 1 and 256 (got %d)", c.MaxInFlight)
	}
	if c.Ordering != OrderingKey && c.Ordering != OrderingNone {
		bad("Ordering must be %q or %q (got %q)", OrderingKey, OrderingNone, c.Ordering)
	}
	if c.Oversize != OversizeDLQ && c.Oversize != OversizeFail {
		bad("Oversize must be %q or %q (got %q)", OversizeDLQ, OversizeFail, c.Oversize)
	}
	if c.MaxInFlightBytes < 0 {
		bad("MaxInFlightBytes must be positive (got %d)", c.MaxInFlightBytes)
	}
	if c.MaxInFlightEvents < 0 {
		bad("MaxInFlightEvents must be positive (got %d)", c.MaxInFlightEvents)
	}
	if c.MaxRequestBytes < 1<<10 || c.MaxRequestBytes > maxRequestBytes {
		bad("MaxRequestBytes must be between 1 KiB and 10 MiB (got %d)", c.MaxRequestBytes)
	}
	if c.Aggregate && c.AggregateHot {
		bad("Aggregate and AggregateHot exclude each other: aggregate every record, or only hot keys' runs")
	}
	if c.CompressAggregates && !c.aggregating() {
		bad("CompressAggregates needs Aggregate or AggregateHot: only aggregates are compressed")
	}
	if c.AggregateMaxBytes < 0 {
		bad("AggregateMaxBytes must not be negative (got %d)", c.AggregateMaxBytes)
	}
	if c.ShardHeadroom < 0 || c.ShardHeadroom > 1 {
		bad("ShardHeadroom must be a fraction in (0, 1] (got %v)", c.ShardHeadroom)
	}
	return errors.Join(errs...)
}

// aggregating reports whether records may go out in aggregates.
func (c *Config) aggregating() bool { return c.Aggregate || c.AggregateHot }

// AggregateMode is the config's CDCBRIDGE_KINESIS_AGGREGATE value:
// false, true or hot.
func (c *Config) AggregateMode() string {
	switch {
	case c.Aggregate:
		return "true"
	case c.AggregateHot:
		return "hot"
	}
	return "false"
}

// AggregateCompression is the config's
// CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION value: none or gzip.
func (c *Config) AggregateCompression() string {
	if c.CompressAggregates {
		return "gzip"
	}
	return "none"
}

// streamParams returns the StreamName or StreamARN to put in requests.
func (c *Config) streamParams() (name, arn *string) {
	s := c.Stream
	if strings.HasPrefix(s, "arn:") {
		return nil, &s
	}
	return &s, nil
}

// streamLabel is the stream's name for messages.
func (c *Config) streamLabel() string {
	if i := strings.LastIndex(c.Stream, ":stream/"); i >= 0 && strings.HasPrefix(c.Stream, "arn:") {
		return c.Stream[i+len(":stream/"):]
	}
	return c.Stream
}
