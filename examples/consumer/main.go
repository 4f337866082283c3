// Command consumer is a Kinesis consumer of cdcbridge events that applies
// each change exactly once, however many instances run and however often
// a record is delivered: it de-aggregates KPL records, drops duplicates
// with a shared idempotency store (dedupe.Store, a DynamoDB table), and
// reports per-record failures the way a Lambda handler with
// ReportBatchItemFailures does.
//
// Handle (handler.go) is the part a Lambda function would run; main polls
// the stream itself in its place, so the example runs anywhere:
//
//	STREAM=orders DEDUPE_TABLE=orders-dedupe go run ./examples/consumer
//
// with the usual AWS variables (AWS_REGION, credentials, AWS_ENDPOINT_URL
// for emulators). Start several at once: each change is still applied once.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/dedupe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log); err != nil {
		log.Error("consumer stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	stream, table := os.Getenv("STREAM"), os.Getenv("DEDUPE_TABLE")
	if stream == "" || table == "" {
		return fmt.Errorf("set STREAM (the Kinesis stream) and DEDUPE_TABLE (created if missing)")
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return err
	}
	store, err := dedupe.NewStore(dynamodb.NewFromConfig(awsCfg), dedupe.StoreConfig{
		Table:        table,
		Monotonic:    true,            // never apply an older change of a row after a newer one
		ClaimTimeout: 5 * time.Minute, // the Lambda function's timeout
	})
	if err != nil {
		return err
	}
	if err := store.EnsureTable(ctx); err != nil {
		return err
	}
	c := &Consumer{Store: store, Log: log, Apply: func(ctx context.Context, e *cdc.Event) error {
		// The consumer's real work goes here.
		fmt.Printf("%s %s %s %s\n", e.Op, e.Subject, e.Key, e.Sequence)
		return nil
	}}
	return poll(ctx, kinesis.NewFromConfig(awsCfg), stream, c.Handle, false)
}
