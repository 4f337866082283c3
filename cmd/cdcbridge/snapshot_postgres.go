package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	pgsource "github.com/cdcbridge/cdcbridge/sources/postgres"
)

// snapshotPostgres carries out `cdcbridge snapshot` for the Postgres source.
func snapshotPostgres(ctx context.Context, cfg *Config, op snapshotOp, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "cdcbridge snapshot:", redactError(err.Error(), cfg.Postgres.URL))
		return exitFailed
	}
	switch {
	case op.Status:
		awsCfg, err := loadAWSConfig(ctx)
		if err != nil {
			return fail(err)
		}
		store, _, err := openStore(ctx, cfg, awsCfg, true)
		if err != nil {
			return fail(err)
		}
		defer store.Close()
		infos, err := pgsource.Snapshots(ctx, cfg.Postgres, store)
		if err != nil {
			return fail(err)
		}
		printSnapshots(stdout, infos)
		return exitOK
	case op.Cancel != "":
		lsn, err := pgsource.CancelSnapshot(ctx, cfg.Postgres, op.Cancel)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "cancel of snapshot %s sent (WAL position %s): the active bridge stops it after the chunk in flight\n", op.Cancel, lsn)
		return exitOK
	}
	req, err := pgsource.RequestSnapshot(ctx, cfg.Postgres, op.Tables, op.Where)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "snapshot %s requested: %s", req.ID, strings.Join(req.Tables, ", "))
	if req.Where != "" {
		fmt.Fprintf(stdout, " where %s", req.Where)
	}
	fmt.Fprintf(stdout, "\nthe request is in the WAL at %s: the bridge streaming from slot %s starts it when its stream gets there "+
		"(follow it with cdcbridge snapshot --status)\n", req.LSN, cfg.Postgres.Slot)
	return exitOK
}

// printSnapshots prints one line per snapshot and one per table.
func printSnapshots(w io.Writer, infos []pgsource.SnapshotInfo) {
	if len(infos) == 0 {
		fmt.Fprintln(w, "no snapshots")
		return
	}
	for _, s := range infos {
		state := "running"
		switch {
		case s.Finished != "" && s.Cancelled:
			state = "cancelled " + s.Finished
		case s.Finished != "":
			state = "finished " + s.Finished
		case s.Cancelled:
			state = "cancelling"
		}
		line := fmt.Sprintf("%s  requested %s  %s", s.ID, s.Requested, state)
		if s.Where != "" {
			line += "  where " + s.Where
		}
		fmt.Fprintln(w, line)
		for _, t := range s.Tables {
			line := fmt.Sprintf("  %-40s %-9s rows %d  chunks %d", t.Table, t.State, t.Rows, t.Chunks)
			if len(t.LastKey) > 0 {
				k, _ := json.Marshal(t.LastKey)
				line += "  last key " + string(k)
			}
			if t.Note != "" {
				line += "  (" + t.Note + ")"
			}
			fmt.Fprintln(w, line)
		}
	}
}
