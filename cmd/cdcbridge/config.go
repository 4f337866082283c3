package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	kinesissink "github.com/cdcbridge/cdcbridge/sink/kinesis"
	ddbsource "github.com/cdcbridge/cdcbridge/sources/dynamodb"
	pgsource "github.com/cdcbridge/cdcbridge/sources/postgres"
)

// envPrefix is the prefix of every variable.
const envPrefix = "CDCBRIDGE"

// option is one variable, declared once: its name after CDCBRIDGE_, its
// default, its meaning (what `cdcbridge config` and the README print), and
// set, which parses the value (the default when unset or empty) into the
// part of Config that uses it. Each package gets its own config struct,
// filled here (a subcommand's flags may override a field, as dlq --dir).
type option struct {
	name, def, desc string
	secret          bool // the value may hold a password
	set             func(p *parser, c *Config, v string)
}

// Config is the validated configuration.
type Config struct {
	Source   string
	Postgres pgsource.Config
	DynamoDB ddbsource.Config
	Sink     kinesissink.Config
	// Store is CDCBRIDGE_CHECKPOINT_STORE: scheme "file" (Target a path)
	// or "dynamodb" (Target a table).
	Store struct{ Scheme, Target string }

	HTTPAddr        string
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration
}

// options are every variable, in the order `cdcbridge config` prints them.
// A field's rule lives with its package (pgsource.ValidateSlot, ...) and
// set calls it, so a value accepted here is one the package takes; the
// defaults of package fields are the packages' Default constants.
var options = []option{
	{name: "SOURCE", desc: "postgres or dynamodb (required)",
		set: func(p *parser, c *Config, v string) { c.Source = p.enum(v, true, "postgres", "dynamodb") }},
	{name: "KINESIS_STREAM", desc: "Kinesis stream name or ARN (required)",
		set: func(p *parser, c *Config, v string) {
			if c.Sink.Stream = p.required(v); v != "" {
				p.check(kinesissink.ValidateStream(v))
			}
		}},

	{name: "POSTGRES_URL", secret: true, desc: "libpq URL of the database (required for postgres; the password is never logged)",
		set: func(p *parser, c *Config, v string) {
			if c.Postgres.URL = v; v != "" {
				p.checkSecret(pgsource.ValidateURL(v), v)
			}
		}},
	{name: "POSTGRES_SLOT", def: pgsource.DefaultSlot, desc: "replication slot, created if missing",
		set: func(p *parser, c *Config, v string) { c.Postgres.Slot = v; p.check(pgsource.ValidateSlot(v)) }},
	{name: "POSTGRES_PUBLICATION", def: pgsource.DefaultPublication, desc: "publication, created if missing",
		set: func(p *parser, c *Config, v string) {
			c.Postgres.Publication = v
			p.check(pgsource.ValidatePublication(v))
		}},
	{name: "POSTGRES_TABLES", desc: `schema.table,... for a new publication (empty: all tables); quote a part as in SQL when it needs it: "My Schema"."Odd,Table"`,
		set: func(p *parser, c *Config, v string) {
			var err error
			c.Postgres.Tables, err = pgsource.ParseTableList(v)
			p.check(err)
		}},
	{name: "POSTGRES_SNAPSHOT", def: pgsource.SnapshotInitial, desc: "initial (existing rows as read events when the slot is new) or never",
		set: func(p *parser, c *Config, v string) { c.Postgres.Snapshot = v; p.check(pgsource.ValidateSnapshot(v)) }},
	{name: "POSTGRES_SNAPSHOT_CHUNK_ROWS", def: strconv.Itoa(pgsource.DefaultSnapshotChunkRows), desc: "most rows per snapshot chunk (fewer for large rows: a chunk's events take at most 8 MiB and a quarter of `MAX_INFLIGHT_BYTES`); a crash reads at most one chunk per table again",
		set: func(p *parser, c *Config, v string) { c.Postgres.SnapshotChunkRows = p.positiveInt(v) }},
	{name: "POSTGRES_ON_SLOT_LOST", def: pgsource.OnSlotLostFail, desc: "the slot vanished, was invalidated or was moved ahead by something else after this bridge streamed from it (also a new cluster at the same address): fail, resnapshot or continue (accepting a gap)",
		set: func(p *parser, c *Config, v string) {
			c.Postgres.OnSlotLost = v
			p.check(pgsource.ValidateOnSlotLost(v))
		}},
	{name: "POSTGRES_FAILOVER", def: pgsource.FailoverAuto, desc: "make the slot a failover slot (PostgreSQL 17+) that standbys keep, so it survives a failover: auto (when synchronized_standby_slots is set), true or false",
		set: func(p *parser, c *Config, v string) { c.Postgres.Failover = v; p.check(pgsource.ValidateFailover(v)) }},
	{name: "POSTGRES_STANDBY_URLS", secret: true, desc: "comma-separated libpq URLs of the standbys that may take over; check verifies their failover-slot settings and synced slot (the daemon does not use them)",
		set: func(p *parser, c *Config, v string) {
			c.Postgres.StandbyURLs = splitURLList(v)
			for _, u := range c.Postgres.StandbyURLs {
				p.checkSecret(pgsource.ValidateURL(u), u)
			}
		}},

	{name: "DYNAMODB_TABLE", desc: "table whose stream is read (or set DYNAMODB_STREAM_ARN)",
		set: func(p *parser, c *Config, v string) {
			if c.DynamoDB.Table = v; v != "" {
				p.check(ddbsource.ValidateTable(v))
			}
		}},
	{name: "DYNAMODB_STREAM_ARN", desc: "stream ARN (or set DYNAMODB_TABLE)",
		set: func(p *parser, c *Config, v string) {
			if c.DynamoDB.StreamARN = v; v != "" {
				p.check(ddbsource.ValidateStreamARN(v))
			}
		}},
	{name: "DYNAMODB_START", def: ddbsource.StartTrimHorizon, desc: "where to start without a checkpoint: trim_horizon or latest",
		set: func(p *parser, c *Config, v string) { c.DynamoDB.Start = v; p.check(ddbsource.ValidateStart(v)) }},
	{name: "DYNAMODB_ON_TRIMMED", def: ddbsource.OnTrimmedFail, desc: "records expired before they were read: fail or skip (continue, counted and logged)",
		set: func(p *parser, c *Config, v string) {
			c.DynamoDB.OnTrimmed = v
			p.check(ddbsource.ValidateOnTrimmed(v))
		}},
	// The package's zero value is never; the daemon loads by default.
	{name: "DYNAMODB_SNAPSHOT", def: ddbsource.SnapshotInitial, desc: "initial (the table's existing items as read events, loaded while the stream flows, when the stream has no checkpoint yet) or never; not yet with a dynamodb:// store (unset there: never)",
		set: func(p *parser, c *Config, v string) { c.DynamoDB.Snapshot = v; p.check(ddbsource.ValidateSnapshot(v)) }},
	{name: "DYNAMODB_SNAPSHOT_SEGMENTS", def: "0", desc: "segments of a load's parallel Scan, 1 to 1000 (0: one per GiB or million items of the table, 1 to 16); each holds up to three 1 MB pages in memory (read, read ahead, held)",
		set: func(p *parser, c *Config, v string) {
			if n, ok := p.integer(v); ok {
				c.DynamoDB.SnapshotSegments = n
				p.check(ddbsource.ValidateSnapshotSegments(n))
			}
		}},
	{name: "DYNAMODB_SNAPSHOT_MAX_RCU", def: "0", desc: "read capacity units per second a load may consume, measured from what DynamoDB reports (0: half the table's provisioned read capacity, no limit for an on-demand table); a load backs off when the table throttles it",
		set: func(p *parser, c *Config, v string) {
			if f, ok := p.number(v); ok {
				c.DynamoDB.SnapshotMaxRCU = f
				p.check(ddbsource.ValidateSnapshotMaxRCU(f))
			}
		}},
	{name: "DYNAMODB_SNAPSHOT_CONFIRM_LONG", def: "false", desc: "true runs a load estimated to take near or over the stream's 24-hour retention (from the table's size and the budget); without it such a load is refused",
		set: func(p *parser, c *Config, v string) { c.DynamoDB.SnapshotConfirmLong = p.boolean(v) }},
	{name: "DYNAMODB_IDLE_POLL", def: ddbsource.DefaultIdleInterval.String(), desc: "wait before polling a shard that returned no records",
		set: func(p *parser, c *Config, v string) { c.DynamoDB.IdleInterval = p.duration(v) }},
	{name: "LEASE_DURATION", def: ddbsource.DefaultLeaseDuration.String(), desc: "DynamoDB shard lease length when several instances share a stream (dynamodb:// store); for Postgres, how long the server keeps a silent leader's lock before a standby takes over (at least 1s)",
		set: func(p *parser, c *Config, v string) {
			// The Postgres bound (1s) is above the DynamoDB one.
			if d := p.duration(v); d > 0 {
				p.check(pgsource.ValidateLeaderTimeout(d))
				c.DynamoDB.LeaseDuration, c.Postgres.LeaderTimeout = d, d
			}
		}},

	{name: "CHECKPOINT_STORE", def: "file:///var/lib/cdcbridge/checkpoints.json", desc: "file:///PATH, or dynamodb://TABLE (shared by several instances)",
		set: func(p *parser, c *Config, v string) { c.Store.Scheme, c.Store.Target = p.store(v) }},

	{name: "KINESIS_LINGER", def: kinesissink.DefaultLinger.String(), desc: "longest wait to fill a batch",
		set: func(p *parser, c *Config, v string) { c.Sink.Linger = p.duration(v) }},
	{name: "KINESIS_MAX_IN_FLIGHT", def: strconv.Itoa(kinesissink.DefaultMaxInFlight), desc: "concurrent PutRecords requests",
		set: func(p *parser, c *Config, v string) {
			if n, ok := p.integer(v); ok {
				c.Sink.MaxInFlight = n
				p.check(kinesissink.ValidateMaxInFlight(n))
			}
		}},
	{name: "KINESIS_AGGREGATE", def: "false", desc: "KPL aggregation: false, true (every record) or hot (only a key's run of two or more queued records)",
		set: func(p *parser, c *Config, v string) {
			if strings.EqualFold(v, "hot") {
				c.Sink.AggregateHot = true
				return
			}
			if _, err := strconv.ParseBool(v); err != nil {
				p.add("%s: %q is not false, true or hot", p.name(), v)
				return
			}
			c.Sink.Aggregate = p.boolean(v)
		}},
	{name: "KINESIS_AGGREGATE_COMPRESSION", def: "none", desc: "none, or gzip: every aggregate goes gzipped (consumers gunzip before de-aggregating; a hot key's run shrinks to a small part of its shard's 1 MiB/s)",
		set: func(p *parser, c *Config, v string) {
			switch strings.ToLower(v) {
			case "none":
			case "gzip":
				c.Sink.CompressAggregates = true
			default:
				p.add("%s: %q is not none or gzip", p.name(), v)
			}
		}},
	{name: "KINESIS_CONNECT_TIMEOUT", def: kinesissink.DefaultConnectTimeout.String(), desc: "TCP+TLS connect timeout",
		set: func(p *parser, c *Config, v string) { c.Sink.ConnectTimeout = p.duration(v) }},
	{name: "KINESIS_REQUEST_TIMEOUT", def: kinesissink.DefaultRequestTimeout.String(), desc: "timeout of one PutRecords attempt",
		set: func(p *parser, c *Config, v string) {
			// Also how long a DynamoDB lease holder's sends may take.
			c.Sink.RequestTimeout = p.duration(v)
			c.DynamoDB.SendTimeout = c.Sink.RequestTimeout
		}},
	{name: "KINESIS_MAX_REQUEST_BYTES", def: formatSize(kinesissink.DefaultMaxRequestBytes), desc: "PutRecords request size limit, 1MiB to 10MiB (AWS allows up to 10MiB)",
		set: func(p *parser, c *Config, v string) {
			n := p.size(v)
			if n == 0 {
				return
			}
			c.Sink.MaxRequestBytes = int(min(n, math.MaxInt32))
			if n < kinesissink.MinStreamRecordBytes {
				p.add("%s: %d is below 1MiB, the smallest record limit of a stream (records the stream takes would go to the dead-letter store)", p.name(), n)
			} else {
				p.check(kinesissink.ValidateMaxRequestBytes(c.Sink.MaxRequestBytes))
			}
		}},
	{name: "KINESIS_AGGREGATE_MAX_BYTES", desc: "size cap of one KPL aggregate (empty: the stream's record limit)",
		set: func(p *parser, c *Config, v string) {
			if v != "" {
				c.Sink.AggregateMaxBytes = int(min(p.size(v), math.MaxInt32))
			}
		}},
	{name: "KINESIS_SHARD_HEADROOM", def: strconv.FormatFloat(kinesissink.DefaultShardHeadroom, 'g', -1, 64), desc: "fraction of each shard's write limits (1 MiB/s, 1000 records/s) the producer paces itself to",
		set: func(p *parser, c *Config, v string) {
			if f, ok := p.number(v); ok {
				c.Sink.ShardHeadroom = f
				p.check(kinesissink.ValidateShardHeadroom(f))
			}
		}},

	{name: "ORDERING", def: string(kinesissink.OrderingKey), desc: "key (strict order per partition key) or none",
		set: func(p *parser, c *Config, v string) {
			c.Sink.Ordering = kinesissink.Ordering(v)
			p.check(kinesissink.ValidateOrdering(v))
		}},
	{name: "OVERSIZE", def: kinesissink.OversizeDLQ, desc: "record over the stream's size limit: dlq or fail",
		set: func(p *parser, c *Config, v string) { c.Sink.Oversize = v; p.check(kinesissink.ValidateOversize(v)) }},
	{name: "DLQ_DIR", def: kinesissink.DefaultDLQDir, desc: "where oversize and poison events are kept (an absolute path)",
		set: func(p *parser, c *Config, v string) {
			// A relative path would depend on the working directory,
			// which a container seldom sets with the DLQ in mind.
			if c.Sink.DLQDir = v; !filepath.IsAbs(v) {
				p.add("%s: %q is not an absolute path", p.name(), v)
			}
		}},
	{name: "MAX_INFLIGHT_BYTES", def: formatSize(kinesissink.DefaultMaxInFlightBytes), desc: "back-pressure budget in bytes (64MiB, 10MB, 1048576)",
		set: func(p *parser, c *Config, v string) { c.Sink.MaxInFlightBytes = p.size(v) }},
	{name: "MAX_INFLIGHT_EVENTS", def: strconv.Itoa(kinesissink.DefaultMaxInFlightEvents), desc: "back-pressure budget in events",
		set: func(p *parser, c *Config, v string) { c.Sink.MaxInFlightEvents = p.positiveInt(v) }},

	{name: "HTTP_ADDR", def: ":9464", desc: "listen address of /metrics, /healthz, /readyz, /status",
		set: func(p *parser, c *Config, v string) {
			if c.HTTPAddr = p.required(v); v != "" {
				if err := checkListenAddr(v); err != nil {
					p.add("%s: %q %v (want host:port or :port, such as :9464)", p.name(), v, err)
				}
			}
		}},
	{name: "LOG_LEVEL", def: "info", desc: "debug, info, warn or error",
		set: func(p *parser, c *Config, v string) { c.LogLevel = p.enum(v, false, "debug", "info", "warn", "error") }},
	{name: "LOG_FORMAT", def: "json", desc: "json or text",
		set: func(p *parser, c *Config, v string) { c.LogFormat = p.enum(v, false, "json", "text") }},
	{name: "SHUTDOWN_TIMEOUT", def: "30s", desc: "time to flush and checkpoint after SIGTERM",
		set: func(p *parser, c *Config, v string) { c.ShutdownTimeout = p.duration(v) }},
}

// configError lists every problem found; each line names its variable.
type configError []string

func (e configError) Error() string { return "invalid configuration:\n  " + strings.Join(e, "\n  ") }

// loadConfig reads the environment once and validates it, reporting every
// problem at once (a variable set to the empty string takes its default).
func loadConfig() (*Config, error) {
	var p parser
	c := &Config{}
	for _, o := range options {
		v := strings.TrimSpace(os.Getenv(name(o.name)))
		if v == "" {
			v = o.def
		}
		p.current = o.name
		o.set(&p, c, v)
	}
	p.current = ""
	p.unknownVariables(os.Environ())
	switch c.Source {
	case "postgres":
		if c.Postgres.URL == "" {
			p.add("CDCBRIDGE_POSTGRES_URL is required with CDCBRIDGE_SOURCE=postgres (a libpq URL such as postgres://user:password@host:5432/db)")
		}
	case "dynamodb":
		d := c.DynamoDB
		if (d.Table == "") == (d.StreamARN == "") {
			p.add("exactly one of CDCBRIDGE_DYNAMODB_TABLE and CDCBRIDGE_DYNAMODB_STREAM_ARN is required with CDCBRIDGE_SOURCE=dynamodb (got %s)",
				map[bool]string{true: "neither", false: "both"}[d.Table == ""])
		}
		if c.Store.Scheme == "dynamodb" && d.Snapshot == ddbsource.SnapshotInitial {
			// Instances sharing a stream through leases cannot see each
			// other's shard readers, which a load waits for.
			if os.Getenv(name("DYNAMODB_SNAPSHOT")) != "" {
				p.add("CDCBRIDGE_DYNAMODB_SNAPSHOT=initial is not supported yet with CDCBRIDGE_CHECKPOINT_STORE=dynamodb:// (instances sharing the stream); use a file:// store for the load, or never")
			}
			c.DynamoDB.Snapshot = ddbsource.SnapshotNever
		}
		if c.Store.Scheme == "file" {
			c.DynamoDB.RequestDir = snapshotRequestDir(c.Store.Target)
		}
	}
	if c.Sink.AggregateHot && c.Sink.Ordering == kinesissink.OrderingNone {
		p.add("CDCBRIDGE_KINESIS_AGGREGATE=hot needs CDCBRIDGE_ORDERING=key: with none a key's records are not queued together, so no run would form (use true to aggregate every record)")
	}
	if c.Sink.CompressAggregates && c.Sink.AggregateMode() == "false" {
		p.add("CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip needs CDCBRIDGE_KINESIS_AGGREGATE=hot or true: only aggregates are compressed")
	}
	if len(p.problems) > 0 {
		return nil, configError(p.problems)
	}
	return c, nil
}

// parser collects problems instead of stopping at the first; current is
// the variable being parsed, which every problem names.
type parser struct {
	problems []string
	current  string
}

func (p *parser) name() string { return name(p.current) }

func (p *parser) add(format string, args ...any) {
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

func name(v string) string { return envPrefix + "_" + v }

// check records err, when there is one, as a problem of the variable.
func (p *parser) check(err error) {
	if err != nil {
		p.add("%s: %v", p.name(), err)
	}
}

// checkSecret is check for a value that may hold a password.
func (p *parser) checkSecret(err error, value string) {
	if err != nil {
		p.add("%s: %s", p.name(), redactError(err.Error(), value))
	}
}

func (p *parser) integer(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil {
		p.add("%s: %q is not an integer", p.name(), s)
	}
	return n, err == nil
}

func (p *parser) number(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		p.add("%s: %q is not a number", p.name(), s)
		return 0, false
	}
	return f, true
}

func (p *parser) required(s string) string {
	if strings.TrimSpace(s) == "" {
		p.add("%s is required", p.name())
	}
	return s
}

func (p *parser) enum(s string, required bool, allowed ...string) string {
	if s == "" && required {
		p.add("%s is required (one of %s)", p.name(), strings.Join(allowed, ", "))
		return ""
	}
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	p.add("%s: unknown value %q (one of %s)", p.name(), s, strings.Join(allowed, ", "))
	return ""
}

func (p *parser) duration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		p.add("%s: %q is not a positive duration (for example 500ms, 10s, 2m)", p.name(), s)
		return 0
	}
	return d
}

func (p *parser) positiveInt(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		p.add("%s: %q is not a positive integer", p.name(), s)
		return 0
	}
	return n
}

func (p *parser) boolean(s string) bool {
	b, err := strconv.ParseBool(s)
	if err != nil {
		p.add("%s: %q is not a boolean (true or false)", p.name(), s)
	}
	return b
}

func (p *parser) size(s string) int64 {
	n, err := parseSize(s)
	if err != nil {
		p.add("%s: %v", p.name(), err)
	}
	return n
}

func (p *parser) store(s string) (scheme, target string) {
	u, err := url.Parse(s)
	if err != nil {
		p.add("%s: %v", p.name(), err)
		return "", ""
	}
	switch u.Scheme {
	case "file":
		// file://relative/cp.json parses as host "relative" and path
		// "/cp.json": a file nobody meant. Only an empty host (or
		// localhost) leaves the path as written.
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") || (u.Host != "" && u.Host != "localhost") {
			p.add("%s: %q needs an absolute path (file:///var/lib/cdcbridge/checkpoints.json)", p.name(), s)
		}
		return "file", u.Path
	case "dynamodb":
		if u.Host == "" {
			p.add("%s: %q needs a table name (dynamodb://TABLE)", p.name(), s)
		}
		return "dynamodb", u.Host
	default:
		p.add("%s: unknown scheme in %q (file:///PATH or dynamodb://TABLE)", p.name(), s)
		return "", ""
	}
}

// formatSize writes n as parseSize reads it, in the largest binary unit
// that divides it.
func formatSize(n int64) string {
	for _, u := range []struct {
		unit string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.unit
		}
	}
	return strconv.FormatInt(n, 10)
}

// parseSize accepts a plain byte count or a number with a unit: B, KB, MB,
// GB (powers of 1000) or KiB, MiB, GiB (powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9') {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a size (for example 64MiB, 10MB, 1048576)", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: %v", s, err)
	}
	mult := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[strings.TrimSpace(t[i:])]
	if mult == 0 {
		return 0, fmt.Errorf("%q has an unknown unit (B, KB, MB, GB, KiB, MiB, GiB)", s)
	}
	if n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return n * mult, nil
}

// checkListenAddr accepts host:port (the host may be empty) with a numeric
// port from 0 to 65535: a subset of what net.Listen("tcp", ...) takes.
func checkListenAddr(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("is not host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("has no valid port (0 to 65535)")
	}
	return nil
}

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactURL hides the password of a libpq URL or keyword/value string.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return kvPassword.ReplaceAllString(s, "${1}xxxxx")
}

// redactURLs redacts each URL of a comma-separated list.
func redactURLs(s string) string {
	urls := splitURLList(s)
	for i, u := range urls {
		urls[i] = redactURL(u)
	}
	return strings.Join(urls, ",")
}

// splitURLList splits a comma-separated list of libpq URLs; a comma
// inside one URL (a multi-host postgres://a,b/db) stays in it.
func splitURLList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
		case len(out) > 0 && !strings.HasPrefix(part, "postgres://") && !strings.HasPrefix(part, "postgresql://"):
			out[len(out)-1] += "," + part
		default:
			out = append(out, part)
		}
	}
	return out
}

// redactError removes a secret-bearing string from an error text.
func redactError(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, redactURL(secret))
}
