package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgresBinDir is where Debian's postgresql-15 package puts the
// server binaries; they are not on PATH there.
const DefaultPostgresBinDir = "/usr/lib/postgresql/15/bin"

// PostgresOptions configures StartPostgres.
type PostgresOptions struct {
	// Settings are extra postgresql.conf settings, applied after (and so
	// over) the defaults below.
	Settings map[string]string
	// BinDir holds initdb and postgres. Default: PostgresBinDir(Version);
	// with neither Version nor PostgresVersionEnv set, DefaultPostgresBinDir
	// when it has them, else PATH.
	BinDir string
	// Version is the major version to start when BinDir is empty.
	// Default: PostgresVersionEnv, else DefaultPostgresVersion. A chosen
	// version is checked against the server that starts.
	Version int
}

// defaultSettings make a cluster fit for logical replication tests.
// fsync=off trades durability across an OS crash, which tests never see,
// for speed; a server crash (Restart "immediate") still recovers fully.
var defaultSettings = map[string]string{
	"wal_level":             "logical",
	"max_replication_slots": "20",
	"max_wal_senders":       "20",
	"fsync":                 "off",
	"listen_addresses":      "127.0.0.1",
}

// Postgres is a throwaway PostgreSQL cluster: superuser postgres, trust
// authentication on loopback TCP and on its socket.
type Postgres struct {
	Dir   string // temporary directory: data/, postgres.log, the Unix socket
	Port  int
	Major int // the server's major version (server_version)

	postgresBin string
	cred        *syscall.Credential // nil unless running as root

	mu       sync.Mutex // guards proc across Shutdown, Start, Restart, Stop
	proc     *process   // nil while shut down
	stopped  bool
	stopOnce sync.Once
	stopErr  error
}

// StartPostgres creates a cluster with initdb in a new temporary directory
// and starts it on a free loopback port.
//
// PostgreSQL refuses to run as root. As root, initdb and postgres run as
// the OS user postgres (created if missing), which owns the directory. The
// server runs as a direct child (not daemonized through pg_ctl) so that it
// dies with the test binary.
func StartPostgres(opts PostgresOptions) (*Postgres, error) {
	binDir, orPath, want, err := postgresBinaries(opts)
	if err != nil {
		return nil, err
	}
	initdb, err := findPostgresBinary(binDir, "initdb", orPath)
	if err != nil {
		return nil, err
	}
	postgres, err := findPostgresBinary(binDir, "postgres", orPath)
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "testenv-postgres-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{Dir: dir, postgresBin: postgres, cred: cred}
	if err := p.init(initdb, opts.Settings); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := p.startOnFreePort(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	track(p)
	if p.Major, err = p.serverMajor(); err == nil && want != 0 && p.Major != want {
		err = fmt.Errorf("postgres: %s started PostgreSQL %d, want %d", postgres, p.Major, want)
	}
	if err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// postgresBinaries picks the folder of initdb and postgres, whether PATH
// may stand in for it, and the major version the caller chose (0: none).
// Only the default of old (no version chosen anywhere) falls back to PATH:
// a chosen version must not be replaced by whatever PATH has.
func postgresBinaries(opts PostgresOptions) (dir string, orPath bool, want int, err error) {
	if opts.BinDir != "" {
		return opts.BinDir, false, opts.Version, nil
	}
	want = opts.Version
	if want == 0 {
		if want, err = envPostgresVersion(); err != nil {
			return "", false, 0, fmt.Errorf("postgres: %w", err)
		}
		if os.Getenv(PostgresVersionEnv) == "" {
			return DefaultPostgresBinDir, true, 0, nil
		}
	}
	dir, err = PostgresBinDir(want)
	if err != nil {
		return "", false, 0, fmt.Errorf("postgres: %w", err)
	}
	return dir, false, want, nil
}

// serverMajor asks the running server for its major version.
func (p *Postgres) serverMajor() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return 0, fmt.Errorf("postgres: reading the server version: %w", err)
	}
	defer conn.Close(ctx)
	return majorFromServerVersion(conn.PgConn().ParameterStatus("server_version"))
}

// findPostgresBinary looks in binDir, then (if allowed) on PATH.
func findPostgresBinary(binDir, name string, orPath bool) (string, error) {
	path := filepath.Join(binDir, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if orPath {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("postgres: %s not found in %s or on PATH (%s)", name, binDir, installHint)
}

var (
	postgresUserOnce sync.Once
	postgresUserCred *syscall.Credential
	postgresUserErr  error
)

// postgresCredential returns the credential to run PostgreSQL with: nil
// when not root, else the postgres OS user's, creating that user if
// needed (a fresh machine without the Debian package has none).
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	postgresUserOnce.Do(func() {
		u, err := user.Lookup("postgres")
		if err != nil {
			out, addErr := exec.Command("useradd", "--system", "--user-group",
				"--no-create-home", "--shell", "/usr/sbin/nologin", "postgres").CombinedOutput()
			if addErr != nil {
				postgresUserErr = fmt.Errorf("creating OS user postgres (PostgreSQL refuses to run as root): %v: %s", addErr, out)
				return
			}
			if u, err = user.Lookup("postgres"); err != nil {
				postgresUserErr = err
				return
			}
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		postgresUserCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	})
	return postgresUserCred, postgresUserErr
}

// command prepares a PostgreSQL program to run as the right user in Dir.
func (p *Postgres) command(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Dir = p.Dir
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd
}

func (p *Postgres) dataDir() string { return filepath.Join(p.Dir, "data") }
func (p *Postgres) logPath() string { return filepath.Join(p.Dir, "postgres.log") }

// init runs initdb and appends the settings to postgresql.conf. Settings go
// into the file rather than onto the command line so that tests can still
// change them with ALTER SYSTEM (the command line would win over that).
func (p *Postgres) init(initdb string, extra map[string]string) error {
	if p.cred != nil {
		// The server's user must own its directory; /tmp and MkdirTemp's
		// parents are traversable by everyone.
		if err := os.Chown(p.Dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return fmt.Errorf("postgres: handing %s to the postgres user: %w", p.Dir, err)
		}
	}
	out, err := p.command(initdb, "-D", p.dataDir(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		return fmt.Errorf("postgres: initdb: %v\n--- initdb output ---\n%s", err, strings.TrimSpace(string(out)))
	}
	settings := map[string]string{"unix_socket_directories": p.Dir}
	for k, v := range defaultSettings {
		settings[k] = v
	}
	for k, v := range extra {
		settings[k] = v
	}
	return appendSettings(p.dataDir(), settings)
}

// startOnFreePort starts the server on a free loopback port. Only the
// launch is retried on a lost port race; the cluster stays.
func (p *Postgres) startOnFreePort() error {
	_, err := retryOnPortRace(func() (struct{}, error) {
		var err error
		if p.Port, err = freePort(); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, p.Start()
	})
	return err
}

// Start starts a shut-down server again on the same port and data.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *Postgres) startLocked() error {
	if p.stopped {
		return fmt.Errorf("postgres in %s was stopped and removed", p.Dir)
	}
	if p.proc != nil {
		return nil
	}
	proc, err := startProcess("postgres",
		p.command(p.postgresBin, "-D", p.dataDir(), "-p", strconv.Itoa(p.Port)), p.logPath())
	if err != nil {
		return err
	}
	// Crash recovery after an immediate shutdown can take a while on a
	// loaded machine.
	if err := proc.waitReady(60*time.Second, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	}); err != nil {
		_ = proc.stop(syscall.SIGQUIT, 5*time.Second)
		return err
	}
	p.proc = proc
	return nil
}

// Shutdown stops the server but keeps its data, like pg_ctl stop -m mode:
// "smart" waits for clients to disconnect, "fast" disconnects them,
// "immediate" aborts without a checkpoint (crash recovery on Start),
// "kill" sends SIGKILL to the postmaster and every backend at once, as
// when the machine under it dies.
func (p *Postgres) Shutdown(mode string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shutdownLocked(mode)
}

func (p *Postgres) shutdownLocked(mode string) error {
	// The postmaster's shutdown modes are chosen by signal.
	sig, ok := map[string]syscall.Signal{
		"smart":     syscall.SIGTERM,
		"fast":      syscall.SIGINT,
		"immediate": syscall.SIGQUIT,
		"kill":      syscall.SIGKILL,
	}[mode]
	if !ok {
		return fmt.Errorf("postgres: unknown shutdown mode %q (smart, fast, immediate or kill)", mode)
	}
	if p.proc == nil {
		return nil
	}
	if mode == "kill" {
		err := p.killLocked()
		p.proc = nil
		return err
	}
	err := p.proc.stop(sig, 60*time.Second)
	p.proc = nil
	return err
}

// killLocked is kill -9 of the postmaster and every backend at once. The
// backends are not in the postmaster's process group (each calls setsid,
// so that the postmaster can signal a child's own children), so the group
// signal of process.stop would leave them running until they notice the
// postmaster is gone, holding the shared memory that a new postmaster on
// the same data refuses to share. The postmaster is stopped first, so
// that it starts no process between the listing and the kill.
func (p *Postgres) killLocked() error {
	pid := p.proc.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return p.proc.stop(syscall.SIGKILL, 10*time.Second) // already gone
	}
	children, err := childPIDs(pid)
	for _, c := range children {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	if stopErr := p.proc.stop(syscall.SIGKILL, 10*time.Second); err == nil {
		err = stopErr
	}
	if goneErr := waitGone(children, 30*time.Second); err == nil {
		err = goneErr
	}
	if err != nil {
		return fmt.Errorf("postgres: killing: %w", err)
	}
	return nil
}

// Restart shuts the server down with mode ("fast" or "immediate", see
// Shutdown) and starts it again on the same port and data, like pg_ctl
// restart -m mode. Existing connections are broken.
func (p *Postgres) Restart(mode string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.shutdownLocked(mode); err != nil {
		return err
	}
	return p.startLocked()
}

// Stop shuts the server down (fast) and removes its directory. Calling it
// again returns the first result.
func (p *Postgres) Stop() error {
	p.stopOnce.Do(func() {
		untrack(p)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.stopErr = p.shutdownLocked("fast")
		p.stopped = true
		if err := os.RemoveAll(p.Dir); err != nil && p.stopErr == nil {
			p.stopErr = err
		}
	})
	return p.stopErr
}

// URL returns a connection URL for database db as the superuser.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, url.PathEscape(db))
}

// CreateDatabase creates database name.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

// Log returns the tail of the server log.
func (p *Postgres) Log() string { return tailFile(p.logPath(), 40) }
