package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcbridge/cdcbridge/internal/choice"
	"github.com/cdcbridge/cdcbridge/internal/fence"
)

// Config configures the PostgreSQL source. Zero values take the documented
// defaults.
type Config struct {
	// URL is the libpq URL (or key=value string) of the database. Its TLS
	// settings (sslmode, sslrootcert, ...) apply to every connection,
	// including the replication connection derived from it.
	URL string
	// Slot is the logical replication slot. Default "cdcbridge".
	Slot string
	// Publication is the publication to stream. Used as it is when it
	// exists; otherwise created for Tables (see publication.go).
	// Default "cdcbridge".
	Publication string
	// Tables lists schema.table names for a publication the bridge creates;
	// empty means every table.
	Tables []string
	// Snapshot is "initial" (default: existing rows as read events when the
	// slot is new) or "never".
	Snapshot string
	// OnSlotLost is what to do when the slot this bridge streamed from is
	// gone or invalidated: "fail" (default), "resnapshot" or "continue".
	OnSlotLost string
	// Failover makes the slot a failover slot (PostgreSQL 17+), which
	// standbys with sync_replication_slots keep a copy of, so that it
	// survives the promotion of a standby: "auto" (default: when the
	// server's synchronized_standby_slots names standbys), "true" (an
	// error when the server cannot) or "false". See failover.go.
	Failover string
	// StandbyURLs are the standbys `cdcbridge check` verifies for failover
	// slots (sync_replication_slots, hot_standby_feedback, the synced
	// slot). Run does not use them.
	StandbyURLs []string
	// StatusInterval is the period of standby status updates. Default 10s,
	// capped at a third of the server's wal_sender_timeout.
	StatusInterval time.Duration
	// CheckpointFailureLimit is how long saving the slot's state to the
	// checkpoint store may keep failing before Run stops with the error.
	// Default 2m, as for the DynamoDB source. Until then the source keeps
	// streaming (the slot, not the store, holds its position) and reports
	// itself degraded.
	CheckpointFailureLimit time.Duration
	// SnapshotChunkRows is the most rows per snapshot chunk (fewer when
	// rows are large: a chunk holds at most 8 MiB, and at most a quarter
	// of Budget; see chunks.go).
	SnapshotChunkRows int
	// Budget, when set, is the sink's in-flight budget: the snapshot
	// chunks the source holds before they go out count in it.
	Budget Budget
	// PublicationSyncInterval is how often a publication created by the
	// bridge is brought up to date with new tables. Default 10s.
	PublicationSyncInterval time.Duration
	// Heartbeat, when set, is called on every iteration of the main loops,
	// including while waiting normally (for the lock, for acknowledgements).
	Heartbeat func()
	// LeaderTimeout is how long the server keeps the slot's lock for a
	// leader it no longer hears from (default 10s; see fence.go). A standby
	// takes over about two fifths of it after the leader's end.
	LeaderTimeout time.Duration
	// Fence, when set, is the gate of the sink's sends: a leader that lost
	// the lock stops sending at once (see internal/fence).
	Fence *fence.Gate
}

// Budget is memory shared with the sink: Reserve waits until n bytes fit
// in it beside the events in flight, Unreserve returns them.
type Budget interface {
	Reserve(ctx context.Context, n int64) error
	Unreserve(n int64)
	InFlightBudget() int64
}

const (
	SnapshotInitial = "initial"
	SnapshotNever   = "never"

	OnSlotLostFail       = "fail"
	OnSlotLostResnapshot = "resnapshot"
	OnSlotLostContinue   = "continue"
)

// identRE is what the bridge accepts as a slot or publication name: slot
// names are restricted by PostgreSQL to this alphabet anyway, and keeping
// publications to it spares quoting in replication commands.
var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Defaults of Config, declared once: setDefaults applies them, and
// cmd/cdcbridge prints them as its variables' defaults.
const (
	DefaultSlot        = "cdcbridge"
	DefaultPublication = "cdcbridge"
	// DefaultLeaderTimeout is LeaderTimeout's default; MinLeaderTimeout
	// its least value.
	DefaultLeaderTimeout = 10 * time.Second
	MinLeaderTimeout     = time.Second
)

// The validators below are the rules of Config's fields, exported so that
// cmd/cdcbridge checks its variables with the same functions validate
// uses (a value the configuration accepts is one the source takes).
// Their errors do not name the field: each caller prefixes its own name.

// ValidateSlot checks a replication slot name.
func ValidateSlot(s string) error {
	if !identRE.MatchString(s) {
		return fmt.Errorf("%q: use 1 to 63 lower-case letters, digits and underscores, not starting with a digit", s)
	}
	return nil
}

// ValidatePublication checks a publication name: a slot name's alphabet,
// short enough for the companion publication's suffix.
func ValidatePublication(s string) error {
	if err := ValidateSlot(s); err != nil {
		return err
	}
	if len(s)+len(insertOnlySuffix) > 63 {
		return fmt.Errorf("%q: at most %d characters (the bridge may add %q for a companion publication)", s, 63-len(insertOnlySuffix), insertOnlySuffix)
	}
	return nil
}

// ValidateURL checks a libpq URL or keyword/value string as the source
// parses it. Its errors never include the password.
func ValidateURL(s string) error {
	if _, err := pgconn.ParseConfig(s); err != nil {
		if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") && !strings.Contains(s, "=") {
			return errors.New("want postgres://user:password@host:port/database or host=... dbname=...")
		}
		return err
	}
	return nil
}

// ValidateTable checks one entry of Tables: schema.table, either part
// double-quoted as in SQL; an unqualified name means public.
func ValidateTable(s string) error {
	_, _, err := splitTableName(s)
	return err
}

// ParseTableList splits the CDCBRIDGE_POSTGRES_TABLES form into Tables
// entries: comma-separated schema.table names, each part optionally
// double-quoted as in SQL, where a comma, a dot or a doubled quote inside
// the quotes belongs to the name ("My Schema"."Odd,Table"). Unlike Tables
// it requires the schema, so that a list never depends on search paths.
// An empty list is nil.
func ParseTableList(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	var errs []error
	start, quoted := 0, false
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			if s[i] == '"' {
				quoted = !quoted // a doubled quote toggles twice
			}
			if quoted || s[i] != ',' {
				continue
			}
		}
		t := strings.TrimSpace(s[start:i])
		start = i + 1
		parts, err := splitQualified(t)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%q: %w", t, err))
		case len(parts) != 2:
			errs = append(errs, fmt.Errorf("%q is not schema.table", t))
		default:
			out = append(out, t)
		}
	}
	return out, errors.Join(errs...)
}

// ValidateSnapshot checks Snapshot.
func ValidateSnapshot(s string) error {
	return choice.Check(s, SnapshotInitial, SnapshotNever)
}

// ValidateOnSlotLost checks OnSlotLost.
func ValidateOnSlotLost(s string) error {
	return choice.Check(s, OnSlotLostFail, OnSlotLostResnapshot, OnSlotLostContinue)
}

// ValidateFailover checks Failover.
func ValidateFailover(s string) error {
	return choice.Check(s, FailoverAuto, FailoverOn, FailoverOff)
}

// ValidateLeaderTimeout checks LeaderTimeout.
func ValidateLeaderTimeout(d time.Duration) error {
	if d < MinLeaderTimeout {
		return fmt.Errorf("%v: want at least %v (the lock needs time to renew)", d, MinLeaderTimeout)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if c.Publication == "" {
		c.Publication = DefaultPublication
	}
	if c.Snapshot == "" {
		c.Snapshot = SnapshotInitial
	}
	if c.OnSlotLost == "" {
		c.OnSlotLost = OnSlotLostFail
	}
	if c.Failover == "" {
		c.Failover = FailoverAuto
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = 10 * time.Second
	}
	if c.CheckpointFailureLimit <= 0 {
		c.CheckpointFailureLimit = 2 * time.Minute
	}
	if c.SnapshotChunkRows <= 0 {
		c.SnapshotChunkRows = DefaultSnapshotChunkRows
	}
	if c.PublicationSyncInterval <= 0 {
		c.PublicationSyncInterval = 10 * time.Second
	}
	if c.LeaderTimeout <= 0 {
		c.LeaderTimeout = DefaultLeaderTimeout
	}
}

// DefaultSnapshotChunkRows is SnapshotChunkRows's default.
const DefaultSnapshotChunkRows = 10000

func (c *Config) validate() error {
	var errs []error
	check := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("postgres: %s %w", what, err))
		}
	}
	if c.URL == "" {
		errs = append(errs, errors.New("postgres: URL is required (CDCBRIDGE_POSTGRES_URL)"))
	} else {
		check("URL:", ValidateURL(c.URL))
	}
	check("slot", ValidateSlot(c.Slot))
	check("publication", ValidatePublication(c.Publication))
	for _, t := range c.Tables {
		check("tables:", ValidateTable(t))
	}
	check("leader timeout", ValidateLeaderTimeout(c.LeaderTimeout))
	check("snapshot:", ValidateSnapshot(c.Snapshot))
	check("failover:", ValidateFailover(c.Failover))
	for _, u := range c.StandbyURLs {
		check("standby URL:", ValidateURL(u))
	}
	check("on slot lost:", ValidateOnSlotLost(c.OnSlotLost))
	return errors.Join(errs...)
}

// splitTableName splits "schema.table" (each part optionally double-quoted
// as in SQL; an unqualified name means public).
func splitTableName(s string) (schema, table string, err error) {
	s = strings.TrimSpace(s)
	parts, err := splitQualified(s)
	if err != nil {
		return "", "", fmt.Errorf("table %q: %w", s, err)
	}
	switch len(parts) {
	case 1:
		return "public", parts[0], nil
	case 2:
		return parts[0], parts[1], nil
	default:
		return "", "", fmt.Errorf("table %q: want schema.table", s)
	}
}

// unquotedRE is an unquoted SQL identifier: a letter or underscore, then
// letters, digits, underscores and dollars (non-ASCII letters included,
// as PostgreSQL takes them).
var unquotedRE = regexp.MustCompile(`^(?:[A-Za-z_]|[^\x00-\x7f])(?:[A-Za-z0-9_$]|[^\x00-\x7f])*$`)

// splitQualified splits a dotted SQL name; unquoted parts are SQL
// identifiers and fold to lower case as PostgreSQL folds them.
func splitQualified(s string) ([]string, error) {
	var parts []string
	for i := 0; ; {
		if i >= len(s) {
			return nil, errors.New("empty name")
		}
		var part strings.Builder
		if s[i] == '"' {
			i++
			for {
				if i >= len(s) {
					return nil, errors.New("unterminated quote")
				}
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						part.WriteByte('"')
						i += 2
						continue
					}
					i++
					break
				}
				part.WriteByte(s[i])
				i++
			}
		} else {
			start := i
			for i < len(s) && s[i] != '.' {
				if s[i] == '"' {
					return nil, errors.New("quote inside a name")
				}
				i++
			}
			if !unquotedRE.MatchString(s[start:i]) {
				return nil, fmt.Errorf("%q is not an SQL name (quote it: \"%s\")", s[start:i], strings.ReplaceAll(s[start:i], `"`, `""`))
			}
			part.WriteString(strings.ToLower(s[start:i]))
		}
		if part.Len() == 0 {
			return nil, errors.New("empty name")
		}
		parts = append(parts, part.String())
		if i == len(s) {
			return parts, nil
		}
		if s[i] != '.' {
			return nil, errors.New("want '.' between names")
		}
		i++
	}
}

// sessionParams are set on every connection so that the text forms of
// values are the same on the replication connection (where pgoutput
// renders them) and on the snapshot connection, and predictable for
// consumers. extra_float_digits > 0 gives the shortest exact float output.
// The snapshot transaction waits idle while the sink applies back-pressure,
// so no idle-in-transaction timeout may end it. All of these exist since
// PostgreSQL 9.6, so the server accepts them in the startup packet.
var sessionParams = map[string]string{
	"TimeZone":                            "UTC",
	"DateStyle":                           "ISO, MDY",
	"IntervalStyle":                       "postgres",
	"extra_float_digits":                  "3",
	"bytea_output":                        "hex",
	"client_encoding":                     "UTF8",
	"statement_timeout":                   "0",
	"idle_in_transaction_session_timeout": "0",
}
