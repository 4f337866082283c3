package dynamodb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

// Requests from `cdcbridge snapshot` reach the running bridge through a
// directory (Config.RequestDir; the command line puts it beside the
// checkpoint file, PATH.requests): the bridge holds the checkpoint file's
// lock, so another process may read the file but not write it. Each
// request is one JSON file, written to a temporary name and renamed, so
// the bridge never reads half of one. The bridge looks about every
// Config.RequestPoll, adds what it finds to the jobs it keeps in the
// checkpoint store, saves them, and only then deletes the request file: a
// crash in between takes the request again, and a repeated id is ignored.

// SnapshotRequest is a request written by RequestSnapshot or
// CancelSnapshot.
type SnapshotRequest struct {
	Op    string `json:"op"` // "snapshot" or "cancel"
	ID    string `json:"id"`
	Table string `json:"table,omitempty"`
	Time  string `json:"time"`
}

// newSnapshotID names a load: the time and a random part, as the
// PostgreSQL snapshots are named.
func newSnapshotID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "s" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// RequestSnapshot asks the bridge reading table's stream for a new load of
// the table, through dir.
func RequestSnapshot(dir, table string) (SnapshotRequest, error) {
	if table == "" {
		return SnapshotRequest{}, errors.New("name the table")
	}
	r := SnapshotRequest{Op: "snapshot", ID: newSnapshotID(), Table: table, Time: nowText()}
	return r, writeRequest(dir, r)
}

// CancelSnapshot asks the bridge to stop load id after the pages in
// flight.
func CancelSnapshot(dir, id string) (SnapshotRequest, error) {
	if id == "" {
		return SnapshotRequest{}, errors.New("name the snapshot's id")
	}
	r := SnapshotRequest{Op: "cancel", ID: id, Time: nowText()}
	return r, writeRequest(dir, r)
}

func writeRequest(dir string, r SnapshotRequest) error {
	if dir == "" {
		return errors.New("no request directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the request directory: %w", err)
	}
	b, _ := json.Marshal(r)
	name := filepath.Join(dir, r.Op+"-"+r.ID+".json")
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing the request: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing the request: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing the request: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing the request: %w", err)
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing the request: %w", err)
	}
	return nil
}

type requestFile struct {
	path string
	req  SnapshotRequest
}

// readRequests returns the requests waiting in dir, oldest first. A file
// that cannot be read as a request is reported, not taken.
func readRequests(dir string) ([]requestFile, []error) {
	if dir == "" {
		return nil, nil
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, []error{err}
	}
	var out []requestFile
	var errs []error
	for _, n := range names {
		b, err := os.ReadFile(n)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r SnapshotRequest
		if err := json.Unmarshal(b, &r); err != nil || r.ID == "" || (r.Op != "snapshot" && r.Op != "cancel") {
			errs = append(errs, fmt.Errorf("%s is not a snapshot request", n))
			continue
		}
		out = append(out, requestFile{path: n, req: r})
	}
	// Requests before cancels: a cancel taken with its request finds it.
	slices.SortFunc(out, func(a, b requestFile) int {
		if a.req.Op != b.req.Op {
			return strings.Compare(b.req.Op, a.req.Op) // "snapshot" > "cancel"
		}
		return strings.Compare(a.req.Time+a.req.ID, b.req.Time+b.req.ID)
	})
	return out, errs
}

// takeRequests adds the waiting requests to the loader's jobs, saves them
// and removes the request files.
func (s *Source) takeRequests(ctx context.Context, l *loader) error {
	reqs, errs := readRequests(s.cfg.RequestDir)
	for _, err := range errs {
		s.log.Warn("snapshot: a request could not be read; it is left in place", "err", err)
	}
	if len(reqs) == 0 {
		return nil
	}
	l.update(func() {
		for _, rf := range reqs {
			r := rf.req
			i := slices.IndexFunc(l.jobs, func(j *loadJob) bool { return j.ID == r.ID })
			switch r.Op {
			case "snapshot":
				if i >= 0 {
					continue
				}
				j := &loadJob{ID: r.ID, Table: r.Table, Requested: r.Time, State: loadPending}
				if r.Table != s.info.table {
					j.State, j.Finished, j.Note = loadFailed, nowText(), fmt.Sprintf("this bridge reads table %s, not %s", s.info.table, r.Table)
				}
				l.jobs = append(l.jobs, j)
				s.log.Info("snapshot: requested", "id", r.ID, "table", r.Table, "state", j.State, "note", j.Note)
			case "cancel":
				if i < 0 || l.jobs[i].finished() {
					s.log.Warn("snapshot: cancel of an unknown or finished snapshot ignored", "id", r.ID)
					continue
				}
				l.jobs[i].Cancelled = true
				s.log.Info("snapshot: cancel requested", "id", r.ID)
			}
		}
	})
	if err := l.saveRetrying(ctx); err != nil {
		return err
	}
	for _, rf := range reqs {
		if err := os.Remove(rf.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("snapshot: removing a request taken failed", "path", rf.path, "err", err)
		}
	}
	return nil
}

// Snapshots returns table's loads as the bridge last saved them in store
// (at most a page ago while it runs), followed by the requests in dir it
// has not taken yet.
func Snapshots(ctx context.Context, store checkpoint.Store, dir, table string) ([]SnapshotInfo, error) {
	st, _, err := loadStateFrom(ctx, store, table)
	if err != nil {
		return nil, err
	}
	infos := loadInfos(st.Jobs, nil)
	reqs, _ := readRequests(dir)
	for _, rf := range reqs {
		r := rf.req
		switch r.Op {
		case "snapshot":
			infos = append(infos, SnapshotInfo{ID: r.ID, Table: r.Table, Requested: r.Time, State: loadPending,
				Note: "requested; the running bridge has not taken the request yet", Segments: []SnapshotSegment{}})
		case "cancel":
			for i := range infos {
				if infos[i].ID == r.ID && infos[i].Finished == "" {
					infos[i].Note = "cancel requested; the running bridge has not taken the request yet"
				}
			}
		}
	}
	return infos, nil
}

// TableOf returns the table cfg's source reads (Table, or the table of
// StreamARN).
func TableOf(cfg Config) (string, error) {
	if cfg.Table != "" {
		return cfg.Table, nil
	}
	_, t, _, err := parseStreamARN(cfg.StreamARN)
	return t, err
}
