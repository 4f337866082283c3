package main

import (
	"context"
	"fmt"
	"io"
)

// snapshotDynamoDB carries out `cdcbridge snapshot` for the DynamoDB source.
func snapshotDynamoDB(ctx context.Context, cfg *Config, op snapshotOp, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "cdcbridge snapshot: the dynamodb source does not take snapshot requests yet")
	return exitFailed
}
