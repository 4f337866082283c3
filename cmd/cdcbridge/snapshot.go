package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

const snapshotUsage = `Usage:
  cdcbridge snapshot [--where 'SQL condition'] TABLE...   ask the running bridge to read TABLEs again
  cdcbridge snapshot --status                             show every snapshot and its progress
  cdcbridge snapshot --cancel ID                          stop a snapshot

The request reaches whichever instance is active and survives restarts
(PostgreSQL: it travels through the database's WAL to the slot; DynamoDB:
through the checkpoint store). It uses the same CDCBRIDGE_* variables as the
daemon. TABLE is schema.table for PostgreSQL, the table name for DynamoDB.
`

// snapshotOp is what `cdcbridge snapshot` was asked to do: exactly one of
// a request (Tables, with Where), Status, or Cancel.
type snapshotOp struct {
	Tables []string
	Where  string // only rows matching this SQL condition ("": every row)
	Status bool
	Cancel string // a snapshot's id
}

func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("snapshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, snapshotUsage) }
	var op snapshotOp
	fs.StringVar(&op.Where, "where", "", "read only the rows matching this SQL condition (PostgreSQL)")
	fs.BoolVar(&op.Status, "status", false, "show every snapshot and its progress")
	fs.StringVar(&op.Cancel, "cancel", "", "stop the snapshot with this id")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	op.Tables = fs.Args()
	if err := op.validate(); err != nil {
		fmt.Fprintf(stderr, "cdcbridge snapshot: %v\n\n%s", err, snapshotUsage)
		return exitConfig
	}
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	switch cfg.Source {
	case "postgres":
		return snapshotPostgres(ctx, cfg, op, stdout, stderr)
	default:
		return snapshotDynamoDB(ctx, cfg, op, stdout, stderr)
	}
}

func (op *snapshotOp) validate() error {
	modes := 0
	if len(op.Tables) > 0 {
		modes++
	}
	if op.Status {
		modes++
	}
	if op.Cancel != "" {
		modes++
	}
	switch {
	case modes == 0:
		return fmt.Errorf("name the tables to read, or use --status or --cancel ID")
	case modes > 1:
		return fmt.Errorf("tables, --status and --cancel do not go together")
	case op.Where != "" && len(op.Tables) == 0:
		return fmt.Errorf("--where needs the tables it applies to")
	case strings.TrimSpace(op.Where) == "" && op.Where != "":
		return fmt.Errorf("--where is empty")
	}
	for _, t := range op.Tables {
		if strings.TrimSpace(t) == "" || strings.HasPrefix(t, "-") {
			return fmt.Errorf("%q is not a table name (flags go before the tables)", t)
		}
	}
	return nil
}
