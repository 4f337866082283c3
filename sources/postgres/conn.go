package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// keepAlive makes a silently dead peer (a dropped NAT entry, a failed-over
// address) visible within about half a minute instead of the kernel's two
// hours.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}

// applySession sets what every connection of the bridge shares: the
// session parameters that fix value text forms, TCP keepalives, and a
// connect timeout when the URL has none. TLS settings come from the URL
// and are left as they are.
func applySession(c *pgconn.Config) {
	for k, v := range sessionParams {
		c.RuntimeParams[k] = v
	}
	if c.RuntimeParams["application_name"] == "" {
		c.RuntimeParams["application_name"] = "cdcbridge"
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	d := &net.Dialer{KeepAliveConfig: keepAlive}
	c.DialFunc = d.DialContext
}

// connectNormal opens an ordinary (non-replication) connection.
func connectNormal(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing URL: %w", err)
	}
	applySession(&cfg.Config)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, explainConnect("connecting to "+describeTarget(&cfg.Config), err)
	}
	return conn, nil
}

// connectReplication opens a logical replication connection
// (replication=database) to the URL's database, with the URL's TLS
// settings.
func connectReplication(ctx context.Context, url string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing URL: %w", err)
	}
	applySession(cfg)
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, explainConnect("opening a replication connection to "+describeTarget(cfg), err)
	}
	return conn, nil
}

// newPool opens the small pool for catalog queries, lag polling and
// publication upkeep.
func newPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing URL: %w", err)
	}
	applySession(&cfg.ConnConfig.Config)
	cfg.MaxConns = 3
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = time.Minute
	cfg.HealthCheckPeriod = 15 * time.Second
	// The pool pings a connection idle for a second before lending it. A
	// ping that is never answered (a network that drops packets and sends
	// no reset) would otherwise hold the connection for a minute after its
	// caller gave up, and the pool's Close, which ends a session, with it.
	cfg.PingTimeout = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, explainConnect("connecting to "+describeTarget(&cfg.ConnConfig.Config), err)
	}
	return pool, nil
}

// describeTarget names the server and database without credentials.
func describeTarget(c *pgconn.Config) string {
	return fmt.Sprintf("%s:%d/%s as %s", c.Host, c.Port, c.Database, c.User)
}

// connectHints explain the connection errors that no reconnect can fix.
var connectHints = map[string]string{
	"28P01": "fix the password in CDCBRIDGE_POSTGRES_URL",
	"28000": "the role does not exist or pg_hba.conf rejects it: fix the user in CDCBRIDGE_POSTGRES_URL, create the role, or allow it in pg_hba.conf",
	"3D000": "fix the database name in CDCBRIDGE_POSTGRES_URL",
}

// explainConnect turns a failed connection into one line: the server's
// own message and a fix for the errors a retry cannot mend (those become
// fatal, so the bridge stops and says so instead of retrying forever);
// other failures (unreachable, refused, timed out) stay retryable.
func explainConnect(what string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if hint, ok := connectHints[pgErr.Code]; ok {
			return fatal(fmt.Errorf("%s: %s (SQLSTATE %s): %s", what, pgErr.Message, pgErr.Code, hint))
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
