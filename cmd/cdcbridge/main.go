// Command cdcbridge captures committed changes from PostgreSQL or DynamoDB
// Streams and writes them, in order per row, to an Amazon Kinesis data
// stream. Configuration comes from CDCBRIDGE_* environment variables; see
// `cdcbridge config`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal now takes the default action: exit at once
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
