package kinesis

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/cdcbridge/cdcbridge/internal/choice"
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
	maxRecordsPerRequest  = 500
	maxRequestBytes       = 10 << 20
	defaultRecordKiB      = 1024
	shardBytesPerSecond   = 1 << 20 // 1 MiB/s; AWS documents "1 MB" and enforces MiB
	shardRecordsPerSecond = 1000
)

// Defaults of Config, declared once: setDefaults applies them, and
// cmd/cdcbridge prints them as its variables' defaults.
const (
	DefaultLinger            = 50 * time.Millisecond
	DefaultMaxInFlight       = 8
	DefaultConnectTimeout    = 2 * time.Second
	DefaultRequestTimeout    = 10 * time.Second
	DefaultDLQDir            = "/var/lib/cdcbridge/dlq"
	DefaultMaxInFlightBytes  = 64 << 20
	DefaultMaxInFlightEvents = 100_000
	DefaultMaxRequestBytes   = 5 << 20
	DefaultShardHeadroom     = 0.9
)

// Bounds of Config's fields.
const (
	// MaxMaxInFlight is the most concurrent PutRecords requests.
	MaxMaxInFlight = 256
	// MinRequestBytes is the least MaxRequestBytes a Config takes. A
	// request limit below the stream's record limit also lowers the
	// record limit, which tests use to stand in for small streams.
	MinRequestBytes = 1 << 10
	// MinStreamRecordBytes is the smallest record limit a stream has
	// (1 MiB): a request limit below it sends records the stream would
	// take to the dead-letter store, so the daemon's configuration
	// (CDCBRIDGE_KINESIS_MAX_REQUEST_BYTES) refuses it.
	MinStreamRecordBytes = defaultRecordKiB << 10
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
	def(&c.Linger, DefaultLinger)
	def(&c.ConnectTimeout, DefaultConnectTimeout)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.SummaryInterval, 60*time.Second)
	def(&c.RetryBase, 100*time.Millisecond)
	def(&c.RetryMax, 10*time.Second)
	def(&c.DLQFailureLimit, 30*time.Second)
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.Ordering == "" {
		c.Ordering = OrderingKey
	}
	if c.Oversize == "" {
		c.Oversize = OversizeDLQ
	}
	if c.DLQDir == "" {
		c.DLQDir = DefaultDLQDir
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if c.MaxInFlightEvents == 0 {
		c.MaxInFlightEvents = DefaultMaxInFlightEvents
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.ShardHeadroom == 0 {
		c.ShardHeadroom = DefaultShardHeadroom
	}
}

// validate sets the defaults and reports every invalid field.
func (c *Config) validate() error {
	c.setDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	check := func(field string, err error) {
		if err != nil {
			bad("%s %w", field, err)
		}
	}
	if strings.TrimSpace(c.Stream) == "" {
		bad("Stream is required")
	} else {
		check("Stream", ValidateStream(c.Stream))
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
	check("MaxInFlight", ValidateMaxInFlight(c.MaxInFlight))
	check("Ordering", ValidateOrdering(string(c.Ordering)))
	check("Oversize", ValidateOversize(c.Oversize))
	if c.MaxInFlightBytes < 0 {
		bad("MaxInFlightBytes must be positive (got %d)", c.MaxInFlightBytes)
	}
	if c.MaxInFlightEvents < 0 {
		bad("MaxInFlightEvents must be positive (got %d)", c.MaxInFlightEvents)
	}
	check("MaxRequestBytes", ValidateMaxRequestBytes(c.MaxRequestBytes))
	if c.Aggregate && c.AggregateHot {
		bad("Aggregate and AggregateHot exclude each other: aggregate every record, or only hot keys' runs")
	}
	if c.CompressAggregates && !c.aggregating() {
		bad("CompressAggregates needs Aggregate or AggregateHot: only aggregates are compressed")
	}
	if c.AggregateMaxBytes < 0 {
		bad("AggregateMaxBytes must not be negative (got %d)", c.AggregateMaxBytes)
	}
	check("ShardHeadroom", ValidateShardHeadroom(c.ShardHeadroom))
	return errors.Join(errs...)
}

// The validators below are the rules of Config's fields, exported so that
// cmd/cdcbridge checks its variables with the same functions validate
// uses. Their errors do not name the field: each caller prefixes its own.

var (
	streamNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)
	streamARNRE  = regexp.MustCompile(`^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:[0-9]+:stream/([a-zA-Z0-9_.-]{1,128})$`)
)

// ValidateStream checks a stream name (1 to 128 letters, digits, _ . -)
// or a stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME). Kinesis
// answers a bad name with a validation error on every request, which the
// producer would retry for ever.
func ValidateStream(s string) error {
	if strings.HasPrefix(s, "arn:") {
		if !streamARNRE.MatchString(s) {
			return fmt.Errorf("%q is not a Kinesis stream ARN (want arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)", s)
		}
		return nil
	}
	if !streamNameRE.MatchString(s) {
		return fmt.Errorf("%q is not a stream name (1 to 128 letters, digits, '_', '.' and '-') or ARN", s)
	}
	return nil
}

// ValidateMaxInFlight checks MaxInFlight: 1 to MaxMaxInFlight.
func ValidateMaxInFlight(n int) error {
	if n < 1 || n > MaxMaxInFlight {
		return fmt.Errorf("%d is not between 1 and %d, the most concurrent PutRecords requests the producer runs", n, MaxMaxInFlight)
	}
	return nil
}

// ValidateMaxRequestBytes checks MaxRequestBytes: MinRequestBytes to
// the 10 MiB Kinesis allows per request.
func ValidateMaxRequestBytes(n int) error {
	switch {
	case n > maxRequestBytes:
		return fmt.Errorf("%d is above the 10 MiB Kinesis allows per PutRecords request", n)
	case n < MinRequestBytes:
		return fmt.Errorf("%d is below 1 KiB", n)
	}
	return nil
}

// ValidateShardHeadroom checks ShardHeadroom: a fraction in (0, 1].
func ValidateShardHeadroom(f float64) error {
	if !(f > 0 && f <= 1) || math.IsNaN(f) {
		return fmt.Errorf("%v is not a fraction in (0, 1] (for example 0.9)", f)
	}
	return nil
}

// ValidateOrdering checks Ordering.
func ValidateOrdering(s string) error {
	return choice.Check(s, string(OrderingKey), string(OrderingNone))
}

// ValidateOversize checks Oversize.
func ValidateOversize(s string) error { return choice.Check(s, OversizeDLQ, OversizeFail) }

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
