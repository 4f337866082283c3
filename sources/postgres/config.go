package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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

func (c *Config) setDefaults() {
	if c.Slot == "" {
		c.Slot = "cdcbridge"
	}
	if c.Publication == "" {
		c.Publication = "cdcbridge"
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
		c.LeaderTimeout = 10 * time.Second
	}
}

// DefaultSnapshotChunkRows is SnapshotChunkRows's default.
const DefaultSnapshotChunkRows = 10000

func (c *Config) validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("postgres: URL is required (CDCBRIDGE_POSTGRES_URL)"))
	} else if _, err := pgconn.ParseConfig(c.URL); err != nil {
		// ParseConfig errors never include the password.
		errs = append(errs, fmt.Errorf("postgres: URL: %w", err))
	}
	if !identRE.MatchString(c.Slot) {
		errs = append(errs, fmt.Errorf("postgres: slot %q: use 1 to 63 lower-case letters, digits and underscores, not starting with a digit", c.Slot))
	}
	if !identRE.MatchString(c.Publication) {
		errs = append(errs, fmt.Errorf("postgres: publication %q: use 1 to 63 lower-case letters, digits and underscores, not starting with a digit", c.Publication))
	} else if len(c.Publication)+len(insertOnlySuffix) > 63 {
		errs = append(errs, fmt.Errorf("postgres: publication %q: at most %d characters (the bridge may add %q for a companion publication)", c.Publication, 63-len(insertOnlySuffix), insertOnlySuffix))
	}
	for _, t := range c.Tables {
		if _, _, err := splitTableName(t); err != nil {
			errs = append(errs, fmt.Errorf("postgres: tables: %w", err))
		}
	}
	if c.LeaderTimeout < time.Second {
		errs = append(errs, fmt.Errorf("postgres: leader timeout %v: want at least 1s", c.LeaderTimeout))
	}
	switch c.Snapshot {
	case SnapshotInitial, SnapshotNever:
	default:
		errs = append(errs, fmt.Errorf("postgres: snapshot %q: want initial or never", c.Snapshot))
	}
	switch c.Failover {
	case FailoverAuto, FailoverOn, FailoverOff:
	default:
		errs = append(errs, fmt.Errorf("postgres: failover %q: want auto, true or false", c.Failover))
	}
	for _, u := range c.StandbyURLs {
		if _, err := pgconn.ParseConfig(u); err != nil {
			errs = append(errs, fmt.Errorf("postgres: standby URL: %w", err))
		}
	}
	switch c.OnSlotLost {
	case OnSlotLostFail, OnSlotLostResnapshot, OnSlotLostContinue:
	default:
		errs = append(errs, fmt.Errorf("postgres: on slot lost %q: want fail, resnapshot or continue", c.OnSlotLost))
	}
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

// splitQualified splits a dotted SQL name; unquoted parts fold to lower
// case as PostgreSQL folds them.
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
