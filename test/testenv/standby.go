package testenv

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbyOptions configures StartStandby.
type StandbyOptions struct {
	// Name is the standby's application_name and the name of its physical
	// slot on the primary. Default "standby1".
	Name string
	// Settings are extra postgresql.conf settings of the standby (for
	// example sync_replication_slots on PostgreSQL 17+).
	Settings map[string]string
	// PrimarySettings are added to the primary's postgresql.conf before it
	// starts again (for example synchronous_standby_names or
	// synchronized_standby_slots naming Name).
	PrimarySettings map[string]string
}

// StartStandby makes a physical streaming standby of p, a server of this
// package: it creates a physical slot on p, shuts p down cleanly, copies
// its data directory (a cold copy is a valid base backup, and the server
// binaries of every version have what it needs, unlike pg_basebackup),
// restarts p and starts the copy as a hot standby streaming from p
// through that slot, with hot_standby_feedback on. It returns once the
// standby accepts connections and p reports it streaming.
func (p *Postgres) StartStandby(opts StandbyOptions) (*Postgres, error) {
	if opts.Name == "" {
		opts.Name = "standby1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", opts.Name); err != nil {
		return nil, fmt.Errorf("standby: creating physical slot %s: %w", opts.Name, err)
	}
	if err := p.Shutdown("fast"); err != nil {
		return nil, fmt.Errorf("standby: shutting the primary down for the copy: %w", err)
	}
	dir, err := os.MkdirTemp("", "testenv-postgres-standby-")
	if err != nil {
		return nil, err
	}
	s := &Postgres{Dir: dir, Major: p.Major, postgresBin: p.postgresBin, cred: p.cred}
	if err := s.copyFrom(p, opts); err != nil {
		os.RemoveAll(dir)
		_ = p.Start()
		return nil, err
	}
	// After the copy: once promoted, the standby must not wait for itself.
	if err := appendSettings(p.dataDir(), opts.PrimarySettings); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := p.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("standby: restarting the primary: %w", err)
	}
	if err := s.startOnFreePort(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting the standby: %w", err)
	}
	track(s)
	for {
		var streaming bool
		err := p.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming')`,
			[]any{opts.Name}, &streaming)
		if err == nil && streaming {
			return s, nil
		}
		select {
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("standby %s not streaming from the primary (last error: %v)\n--- standby log ---\n%s", opts.Name, err, s.Log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// copyFrom copies the shut-down primary's data directory into s.Dir and
// turns it into a standby of p.
func (s *Postgres) copyFrom(p *Postgres, opts StandbyOptions) error {
	if s.cred != nil {
		if err := os.Chown(s.Dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("standby: handing %s to the postgres user: %w", s.Dir, err)
		}
	}
	// cp -a keeps owners and modes (PostgreSQL insists on 0700 data).
	if out, err := exec.Command("cp", "-a", p.dataDir(), s.dataDir()).CombinedOutput(); err != nil {
		return fmt.Errorf("standby: copying the data directory: %v: %s", err, out)
	}
	for _, f := range []string{"postmaster.pid", "postmaster.opts"} {
		_ = os.Remove(filepath.Join(s.dataDir(), f))
	}
	settings := map[string]string{
		"unix_socket_directories": s.Dir,
		"primary_conninfo": fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=%s",
			p.Port, opts.Name),
		"primary_slot_name":    opts.Name,
		"hot_standby":          "on",
		"hot_standby_feedback": "on",
	}
	maps.Copy(settings, opts.Settings)
	if err := appendSettings(s.dataDir(), settings); err != nil {
		return err
	}
	signal := filepath.Join(s.dataDir(), "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return fmt.Errorf("standby: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(signal, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("standby: %w", err)
		}
	}
	return nil
}

// appendSettings adds settings to dataDir's postgresql.conf; later lines
// win over earlier ones.
func appendSettings(dataDir string, settings map[string]string) error {
	if len(settings) == 0 {
		return nil
	}
	var conf strings.Builder
	conf.WriteString("\n# testenv\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&conf, "%s = '%s'\n", k, strings.ReplaceAll(settings[k], "'", "''"))
	}
	f, err := os.OpenFile(filepath.Join(dataDir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if _, err := f.WriteString(conf.String()); err != nil {
		f.Close()
		return fmt.Errorf("postgres: writing postgresql.conf: %w", err)
	}
	return f.Close()
}

// Promote ends recovery on a standby (pg_promote) and waits until it
// accepts writes.
func (p *Postgres) Promote(ctx context.Context) error {
	var ok bool
	if err := p.queryRow(ctx, "SELECT pg_promote(true, 60)", nil, &ok); err != nil {
		return fmt.Errorf("promoting the standby: %w", err)
	}
	if !ok {
		return fmt.Errorf("promoting the standby: pg_promote did not finish within 60s\n%s", p.Log())
	}
	return nil
}

func (p *Postgres) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func (p *Postgres) queryRow(ctx context.Context, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}
