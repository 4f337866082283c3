package main

import (
	"context"
	"fmt"
	"io"
)

// snapshotPostgres carries out `cdcbridge snapshot` for the Postgres source.
func snapshotPostgres(ctx context.Context, cfg *Config, op snapshotOp, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "cdcbridge snapshot: not implemented for postgres yet")
	return exitFailed
}
