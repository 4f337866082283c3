package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"

	ddbsource "github.com/cdcbridge/cdcbridge/sources/dynamodb"
)

// snapshotRequestDir is where `cdcbridge snapshot` leaves requests for a
// bridge whose checkpoint file is path: the bridge holds the file's lock,
// so requests go to a directory beside it, which the bridge looks at.
func snapshotRequestDir(path string) string { return path + ".requests" }

// snapshotDynamoDB carries out `cdcbridge snapshot` for the DynamoDB source.
func snapshotDynamoDB(ctx context.Context, cfg *Config, op snapshotOp, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "cdcbridge snapshot:", err)
		return exitFailed
	}
	if op.Where != "" {
		fmt.Fprintln(stderr, "cdcbridge snapshot: --where is for PostgreSQL tables; a DynamoDB load always reads the whole table")
		return exitConfig
	}
	if cfg.Store.Scheme != "file" {
		fmt.Fprintln(stderr, "cdcbridge snapshot: loads of a DynamoDB table are not supported yet with CDCBRIDGE_CHECKPOINT_STORE=dynamodb:// (instances sharing the stream); they need a file:// store")
		return exitConfig
	}
	table, err := ddbsource.TableOf(cfg.DynamoDB)
	if err != nil {
		return fail(err)
	}
	dir := cfg.DynamoDB.RequestDir
	switch {
	case op.Status:
		store, _, err := openStore(ctx, cfg, aws.Config{}, true)
		if err != nil {
			return fail(err)
		}
		defer store.Close()
		infos, err := ddbsource.Snapshots(ctx, store, dir, table)
		if err != nil {
			return fail(err)
		}
		printLoads(stdout, infos)
		return exitOK
	case op.Cancel != "":
		if _, err := ddbsource.CancelSnapshot(dir, op.Cancel); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "cancel of snapshot %s requested (in %s): the running bridge stops it after the pages in flight\n", op.Cancel, dir)
		return exitOK
	}
	for _, t := range op.Tables {
		if t != table {
			fmt.Fprintf(stderr, "cdcbridge snapshot: the bridge reads DynamoDB table %s, not %s (a bridge loads the table whose stream it reads)\n", table, t)
			return exitConfig
		}
	}
	req, err := ddbsource.RequestSnapshot(dir, table)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "snapshot %s requested: %s\nthe request is in %s: the running bridge takes it within seconds and loads the table while the stream flows "+
		"(follow it with cdcbridge snapshot --status)\n", req.ID, table, dir)
	return exitOK
}

// printLoads prints one line per load and one per segment.
func printLoads(w io.Writer, infos []ddbsource.SnapshotInfo) {
	if len(infos) == 0 {
		fmt.Fprintln(w, "no snapshots")
		return
	}
	for _, s := range infos {
		line := fmt.Sprintf("%s  %s  requested %s  %s", s.ID, s.Table, s.Requested, s.State)
		if s.Finished != "" {
			line += " " + s.Finished
		} else if s.Cancelled {
			line += " (cancelling)"
		}
		line += fmt.Sprintf("  items %d", s.Items)
		if s.EstimatedItems > 0 {
			line += fmt.Sprintf(" of about %d", s.EstimatedItems)
		}
		line += fmt.Sprintf("  dropped for the stream %d  consumed %.0f RCU", s.Dropped, s.ConsumedRCU)
		if s.Note != "" {
			line += "  (" + s.Note + ")"
		}
		fmt.Fprintln(w, line)
		var segs []string
		for _, sg := range s.Segments {
			segs = append(segs, fmt.Sprintf("%d:%s/%d", sg.Segment, sg.State, sg.Items))
		}
		if len(segs) > 0 {
			fmt.Fprintln(w, "  segments (segment:state/items) "+strings.Join(segs, " "))
		}
	}
}
