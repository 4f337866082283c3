package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// envPrefix is the prefix of every variable.
const envPrefix = "CDCBRIDGE"

// rawConfig is the environment as read. Every field is a string so that
// parse can report every bad value at once (envconfig stops at the first).
// The desc tags are what `cdcbridge config` and the README print.
type rawConfig struct {
	Source        string `envconfig:"SOURCE" desc:"postgres or dynamodb (required)"`
	KinesisStream string `envconfig:"KINESIS_STREAM" desc:"Kinesis stream name or ARN (required)"`

	PostgresURL         string `envconfig:"POSTGRES_URL" desc:"libpq URL of the database (required for postgres; the password is never logged)"`
	PostgresSlot        string `envconfig:"POSTGRES_SLOT" default:"cdcbridge" desc:"replication slot, created if missing"`
	PostgresPublication string `envconfig:"POSTGRES_PUBLICATION" default:"cdcbridge" desc:"publication, created if missing"`
	PostgresTables      string `envconfig:"POSTGRES_TABLES" desc:"schema.table,... for a new publication (empty: all tables)"`
	PostgresSnapshot    string `envconfig:"POSTGRES_SNAPSHOT" default:"initial" desc:"initial (existing rows as read events when the slot is new) or never"`
	PostgresOnSlotLost  string `envconfig:"POSTGRES_ON_SLOT_LOST" default:"fail" desc:"the slot vanished, was invalidated or was moved ahead by something else after this bridge streamed from it (also a new cluster at the same address): fail, resnapshot or continue (accepting a gap)"`
	PostgresFailover    string `envconfig:"POSTGRES_FAILOVER" default:"auto" desc:"make the slot a failover slot (PostgreSQL 17+) that standbys keep, so it survives a failover: auto (when synchronized_standby_slots is set), true or false"`
	PostgresStandbyURLs string `envconfig:"POSTGRES_STANDBY_URLS" desc:"comma-separated libpq URLs of the standbys that may take over; check verifies their failover-slot settings and synced slot (the daemon does not use them)"`

	DynamoDBTable     string `envconfig:"DYNAMODB_TABLE" desc:"table whose stream is read (or set DYNAMODB_STREAM_ARN)"`
	DynamoDBStreamARN string `envconfig:"DYNAMODB_STREAM_ARN" desc:"stream ARN (or set DYNAMODB_TABLE)"`
	DynamoDBStart     string `envconfig:"DYNAMODB_START" default:"trim_horizon" desc:"where to start without a checkpoint: trim_horizon or latest"`
	DynamoDBOnTrimmed string `envconfig:"DYNAMODB_ON_TRIMMED" default:"fail" desc:"records expired before they were read: fail or skip (continue, counted and logged)"`
	DynamoDBIdlePoll  string `envconfig:"DYNAMODB_IDLE_POLL" default:"1s" desc:"wait before polling a shard that returned no records"`
	LeaseDuration     string `envconfig:"LEASE_DURATION" default:"10s" desc:"DynamoDB shard lease length when several instances share a stream (dynamodb:// store); for Postgres, how long the server keeps a silent leader's lock before a standby takes over (at least 1s)"`

	CheckpointStore string `envconfig:"CHECKPOINT_STORE" default:"file:///var/lib/cdcbridge/checkpoints.json" desc:"file:///PATH, or dynamodb://TABLE (shared by several instances)"`

	KinesisLinger          string `envconfig:"KINESIS_LINGER" default:"50ms" desc:"longest wait to fill a batch"`
	KinesisMaxInFlight     string `envconfig:"KINESIS_MAX_IN_FLIGHT" default:"8" desc:"concurrent PutRecords requests"`
	KinesisAggregate       string `envconfig:"KINESIS_AGGREGATE" default:"false" desc:"KPL aggregation: true or false"`
	KinesisConnectTimeout  string `envconfig:"KINESIS_CONNECT_TIMEOUT" default:"2s" desc:"TCP+TLS connect timeout"`
	KinesisRequestTimeout  string `envconfig:"KINESIS_REQUEST_TIMEOUT" default:"10s" desc:"timeout of one PutRecords attempt"`
	KinesisMaxRequestBytes string `envconfig:"KINESIS_MAX_REQUEST_BYTES" default:"5MiB" desc:"PutRecords request size limit (AWS allows up to 10MiB)"`
	KinesisAggregateMax    string `envconfig:"KINESIS_AGGREGATE_MAX_BYTES" desc:"size cap of one KPL aggregate (empty: the stream's record limit)"`
	KinesisShardHeadroom   string `envconfig:"KINESIS_SHARD_HEADROOM" default:"0.9" desc:"fraction of each shard's write limits (1 MiB/s, 1000 records/s) the producer paces itself to"`

	Ordering          string `envconfig:"ORDERING" default:"key" desc:"key (strict order per partition key) or none"`
	Oversize          string `envconfig:"OVERSIZE" default:"dlq" desc:"record over the stream's size limit: dlq or fail"`
	DLQDir            string `envconfig:"DLQ_DIR" default:"/var/lib/cdcbridge/dlq" desc:"where oversize and poison events are kept"`
	MaxInFlightBytes  string `envconfig:"MAX_INFLIGHT_BYTES" default:"64MiB" desc:"back-pressure budget in bytes (64MiB, 10MB, 1048576)"`
	MaxInFlightEvents string `envconfig:"MAX_INFLIGHT_EVENTS" default:"100000" desc:"back-pressure budget in events"`

	HTTPAddr        string `envconfig:"HTTP_ADDR" default:":9464" desc:"listen address of /metrics, /healthz, /readyz, /status"`
	LogLevel        string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat       string `envconfig:"LOG_FORMAT" default:"json" desc:"json or text"`
	ShutdownTimeout string `envconfig:"SHUTDOWN_TIMEOUT" default:"30s" desc:"time to flush and checkpoint after SIGTERM"`
}

// Config is the validated configuration.
type Config struct {
	Source        string
	KinesisStream string

	PostgresURL         string
	PostgresSlot        string
	PostgresPublication string
	PostgresTables      []string
	PostgresSnapshot    string
	PostgresOnSlotLost  string
	PostgresFailover    string
	PostgresStandbyURLs []string

	DynamoDBTable     string
	DynamoDBStreamARN string
	DynamoDBStart     string
	DynamoDBOnTrimmed string
	DynamoDBIdlePoll  time.Duration
	LeaseDuration     time.Duration

	CheckpointScheme string // "file" or "dynamodb"
	CheckpointTarget string // path or table

	KinesisLinger          time.Duration
	KinesisMaxInFlight     int
	KinesisAggregate       bool
	KinesisConnectTimeout  time.Duration
	KinesisRequestTimeout  time.Duration
	KinesisMaxRequestBytes int64
	KinesisAggregateMax    int64
	KinesisShardHeadroom   float64

	Ordering          string
	Oversize          string
	DLQDir            string
	MaxInFlightBytes  int64
	MaxInFlightEvents int

	HTTPAddr        string
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration
}

// configError lists every problem found; each line names its variable.
type configError []string

func (e configError) Error() string { return "invalid configuration:\n  " + strings.Join(e, "\n  ") }

// loadConfig reads the environment (through lookup, for tests) and
// validates it, reporting every problem at once.
func loadConfig() (*Config, error) {
	var raw rawConfig
	if err := envconfig.Process(envPrefix, &raw); err != nil {
		return nil, configError{err.Error()}
	}
	emptyMeansDefault(&raw)
	return parseConfig(&raw)
}

func parseConfig(raw *rawConfig) (*Config, error) {
	var p parser
	c := &Config{
		Source:              p.enum("SOURCE", raw.Source, true, "postgres", "dynamodb"),
		KinesisStream:       p.required("KINESIS_STREAM", raw.KinesisStream),
		PostgresURL:         raw.PostgresURL,
		PostgresSlot:        p.identifier("POSTGRES_SLOT", raw.PostgresSlot, slotName),
		PostgresPublication: p.identifier("POSTGRES_PUBLICATION", raw.PostgresPublication, pubName),
		PostgresTables:      p.tables("POSTGRES_TABLES", raw.PostgresTables),
		PostgresSnapshot:    p.enum("POSTGRES_SNAPSHOT", raw.PostgresSnapshot, false, "initial", "never"),
		PostgresOnSlotLost:  p.enum("POSTGRES_ON_SLOT_LOST", raw.PostgresOnSlotLost, false, "fail", "resnapshot", "continue"),
		PostgresFailover:    p.enum("POSTGRES_FAILOVER", raw.PostgresFailover, false, "auto", "true", "false"),
		PostgresStandbyURLs: p.postgresURLs("POSTGRES_STANDBY_URLS", raw.PostgresStandbyURLs),
		DynamoDBTable:       raw.DynamoDBTable,
		DynamoDBStreamARN:   raw.DynamoDBStreamARN,
		DynamoDBStart:       p.enum("DYNAMODB_START", raw.DynamoDBStart, false, "trim_horizon", "latest"),
		DynamoDBOnTrimmed:   p.enum("DYNAMODB_ON_TRIMMED", raw.DynamoDBOnTrimmed, false, "fail", "skip"),
		DynamoDBIdlePoll:    p.duration("DYNAMODB_IDLE_POLL", raw.DynamoDBIdlePoll),
		LeaseDuration:       p.duration("LEASE_DURATION", raw.LeaseDuration),

		KinesisLinger:          p.duration("KINESIS_LINGER", raw.KinesisLinger),
		KinesisMaxInFlight:     p.positiveInt("KINESIS_MAX_IN_FLIGHT", raw.KinesisMaxInFlight),
		KinesisAggregate:       p.boolean("KINESIS_AGGREGATE", raw.KinesisAggregate),
		KinesisConnectTimeout:  p.duration("KINESIS_CONNECT_TIMEOUT", raw.KinesisConnectTimeout),
		KinesisRequestTimeout:  p.duration("KINESIS_REQUEST_TIMEOUT", raw.KinesisRequestTimeout),
		KinesisMaxRequestBytes: p.size("KINESIS_MAX_REQUEST_BYTES", raw.KinesisMaxRequestBytes),
		KinesisShardHeadroom:   p.fraction("KINESIS_SHARD_HEADROOM", raw.KinesisShardHeadroom),

		Ordering:          p.enum("ORDERING", raw.Ordering, false, "key", "none"),
		Oversize:          p.enum("OVERSIZE", raw.Oversize, false, "dlq", "fail"),
		DLQDir:            p.required("DLQ_DIR", raw.DLQDir),
		MaxInFlightBytes:  p.size("MAX_INFLIGHT_BYTES", raw.MaxInFlightBytes),
		MaxInFlightEvents: p.positiveInt("MAX_INFLIGHT_EVENTS", raw.MaxInFlightEvents),

		HTTPAddr:        p.required("HTTP_ADDR", raw.HTTPAddr),
		LogLevel:        p.enum("LOG_LEVEL", raw.LogLevel, false, "debug", "info", "warn", "error"),
		LogFormat:       p.enum("LOG_FORMAT", raw.LogFormat, false, "json", "text"),
		ShutdownTimeout: p.duration("SHUTDOWN_TIMEOUT", raw.ShutdownTimeout),
	}
	c.CheckpointScheme, c.CheckpointTarget = p.store("CHECKPOINT_STORE", raw.CheckpointStore)
	if raw.KinesisAggregateMax != "" {
		c.KinesisAggregateMax = p.size("KINESIS_AGGREGATE_MAX_BYTES", raw.KinesisAggregateMax)
	}

	switch c.Source {
	case "postgres":
		if raw.PostgresURL == "" {
			p.add("CDCBRIDGE_POSTGRES_URL is required with CDCBRIDGE_SOURCE=postgres (a libpq URL such as postgres://user:password@host:5432/db)")
		} else if err := checkPostgresURL(raw.PostgresURL); err != nil {
			p.add("CDCBRIDGE_POSTGRES_URL: %v", err)
		}
	case "dynamodb":
		if (raw.DynamoDBTable == "") == (raw.DynamoDBStreamARN == "") {
			p.add("exactly one of CDCBRIDGE_DYNAMODB_TABLE and CDCBRIDGE_DYNAMODB_STREAM_ARN is required with CDCBRIDGE_SOURCE=dynamodb (got %s)",
				map[bool]string{true: "neither", false: "both"}[raw.DynamoDBTable == ""])
		}
		if raw.DynamoDBStreamARN != "" && !strings.HasPrefix(raw.DynamoDBStreamARN, "arn:") {
			p.add("CDCBRIDGE_DYNAMODB_STREAM_ARN: %q is not an ARN (want arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)", raw.DynamoDBStreamARN)
		}
	}
	if c.KinesisMaxInFlight > 256 {
		p.add("CDCBRIDGE_KINESIS_MAX_IN_FLIGHT: %d is above 256, the most concurrent PutRecords requests the producer runs", c.KinesisMaxInFlight)
	}
	if c.HTTPAddr != "" {
		if err := checkListenAddr(c.HTTPAddr); err != nil {
			p.add("CDCBRIDGE_HTTP_ADDR: %q %v (want host:port or :port, such as :9464)", c.HTTPAddr, err)
		}
	}
	if c.LeaseDuration > 0 && c.LeaseDuration < time.Second {
		p.add("CDCBRIDGE_LEASE_DURATION: %s is below 1s; leases and the Postgres leader's lock need time to renew", c.LeaseDuration)
	}
	if c.KinesisMaxRequestBytes > 10<<20 {
		p.add("CDCBRIDGE_KINESIS_MAX_REQUEST_BYTES: %d is above the 10MiB Kinesis allows per PutRecords request", c.KinesisMaxRequestBytes)
	}
	if c.KinesisMaxRequestBytes > 0 && c.KinesisMaxRequestBytes < 1<<20 {
		p.add("CDCBRIDGE_KINESIS_MAX_REQUEST_BYTES: %d is below 1MiB, the smallest record limit of a stream", c.KinesisMaxRequestBytes)
	}
	if len(p.problems) > 0 {
		return nil, configError(p.problems)
	}
	return c, nil
}

// parser collects problems instead of stopping at the first.
type parser struct{ problems []string }

func (p *parser) add(format string, args ...any) {
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

func name(v string) string { return envPrefix + "_" + v }

func (p *parser) required(v, s string) string {
	if strings.TrimSpace(s) == "" {
		p.add("%s is required", name(v))
	}
	return s
}

func (p *parser) enum(v, s string, required bool, allowed ...string) string {
	if s == "" && required {
		p.add("%s is required (one of %s)", name(v), strings.Join(allowed, ", "))
		return ""
	}
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	p.add("%s: unknown value %q (one of %s)", name(v), s, strings.Join(allowed, ", "))
	return ""
}

func (p *parser) duration(v, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		p.add("%s: %q is not a positive duration (for example 500ms, 10s, 2m)", name(v), s)
		return 0
	}
	return d
}

func (p *parser) positiveInt(v, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		p.add("%s: %q is not a positive integer", name(v), s)
		return 0
	}
	return n
}

func (p *parser) fraction(v, s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 || f > 1 {
		p.add("%s: %q is not a fraction in (0, 1] (for example 0.9)", name(v), s)
		return 0
	}
	return f
}

func (p *parser) boolean(v, s string) bool {
	b, err := strconv.ParseBool(s)
	if err != nil {
		p.add("%s: %q is not a boolean (true or false)", name(v), s)
	}
	return b
}

func (p *parser) size(v, s string) int64 {
	n, err := parseSize(s)
	if err != nil {
		p.add("%s: %v", name(v), err)
	}
	return n
}

var (
	slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	pubName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)
	tableRe  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$`)
)

func (p *parser) identifier(v, s string, re *regexp.Regexp) string {
	if !re.MatchString(s) {
		p.add("%s: %q is not a valid name (allowed: %s)", name(v), s, re.String())
	}
	return s
}

func (p *parser) tables(v, s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var out []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if !tableRe.MatchString(t) {
			p.add("%s: %q is not schema.table", name(v), t)
			continue
		}
		out = append(out, t)
	}
	return out
}

func (p *parser) store(v, s string) (scheme, target string) {
	u, err := url.Parse(s)
	if err != nil {
		p.add("%s: %v", name(v), err)
		return "", ""
	}
	switch u.Scheme {
	case "file":
		// file://relative/cp.json parses as host "relative" and path
		// "/cp.json": a file nobody meant. Only an empty host (or
		// localhost) leaves the path as written.
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") || (u.Host != "" && u.Host != "localhost") {
			p.add("%s: %q needs an absolute path (file:///var/lib/cdcbridge/checkpoints.json)", name(v), s)
		}
		return "file", u.Path
	case "dynamodb":
		if u.Host == "" {
			p.add("%s: %q needs a table name (dynamodb://TABLE)", name(v), s)
		}
		return "dynamodb", u.Host
	default:
		p.add("%s: unknown scheme in %q (file:///PATH or dynamodb://TABLE)", name(v), s)
		return "", ""
	}
}

// parseSize accepts a plain byte count or a number with a unit: KB, MB, GB
// (powers of 1000) or KiB, MiB, GiB (powers of 1024).
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

// checkListenAddr accepts what net.Listen("tcp", ...) takes: host:port
// with a port from 0 to 65535 (the host may be empty).
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

func checkPostgresURL(s string) error {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		if _, err := url.Parse(s); err != nil {
			return errors.New("not a valid URL: " + redactError(err.Error(), s))
		}
		return nil
	}
	if strings.Contains(s, "=") { // keyword/value form: host=... dbname=...
		return nil
	}
	return errors.New("want postgres://user:password@host:port/database or host=... dbname=...")
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

func (p *parser) postgresURLs(v, s string) []string {
	urls := splitURLList(s)
	for _, u := range urls {
		if err := checkPostgresURL(u); err != nil {
			p.add("%s: %v", name(v), err)
		}
	}
	return urls
}

// redactError removes a secret-bearing string from an error text.
func redactError(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, redactURL(secret))
}

// printConfig writes every variable: name, default, meaning, and the value
// in effect when set (secrets redacted).
func printConfig(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING\tSET TO")
	for _, v := range configVars() {
		cur := ""
		if val, ok := os.LookupEnv(v.Name); ok {
			cur = val
			if v.Secret {
				cur = redactURLs(val)
			}
		}
		def := v.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, def, v.Desc, cur)
	}
	return tw.Flush()
}

type configVar struct {
	Name, Default, Desc string
	Secret              bool
}

// configVars lists the variables from rawConfig's tags, in declaration order.
func configVars() []configVar {
	var out []configVar
	_ = envconfig.Usagef(envPrefix, &rawConfig{}, &varCollector{out: &out}, "{{range .}}{{usage_key .}}\x00{{usage_default .}}\x00{{usage_description .}}\n{{end}}")
	return out
}

type varCollector struct {
	out *[]configVar
	buf []byte
}

func (c *varCollector) Write(b []byte) (int, error) {
	c.buf = append(c.buf, b...)
	for {
		i := strings.IndexByte(string(c.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		f := strings.SplitN(string(c.buf[:i]), "\x00", 3)
		c.buf = c.buf[i+1:]
		if len(f) == 3 {
			*c.out = append(*c.out, configVar{Name: f[0], Default: f[1], Desc: f[2], Secret: f[0] == name("POSTGRES_URL") || f[0] == name("POSTGRES_STANDBY_URLS")})
		}
	}
}

// emptyMeansDefault gives a variable that is set but empty its default, as
// an unset one: orchestrators often render optional settings as "".
func emptyMeansDefault(raw *rawConfig) {
	v := reflect.ValueOf(raw).Elem()
	t := v.Type()
	for i := range t.NumField() {
		if def := t.Field(i).Tag.Get("default"); def != "" && strings.TrimSpace(v.Field(i).String()) == "" {
			v.Field(i).SetString(def)
		}
	}
}
