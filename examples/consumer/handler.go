package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/dedupe"
	"github.com/cdcbridge/cdcbridge/kpl"
)

// The Lambda event and response shapes for a Kinesis trigger with
// ReportBatchItemFailures (the same JSON as aws-lambda-go's
// events.KinesisEvent and events.KinesisEventResponse).
type (
	KinesisEvent struct {
		Records []KinesisEventRecord `json:"Records"`
	}
	KinesisEventRecord struct {
		EventID string        `json:"eventID"`
		Kinesis KinesisRecord `json:"kinesis"`
	}
	KinesisRecord struct {
		Data           []byte `json:"data"`
		PartitionKey   string `json:"partitionKey"`
		SequenceNumber string `json:"sequenceNumber"`
	}
	BatchResponse struct {
		BatchItemFailures []BatchItemFailure `json:"batchItemFailures"`
	}
	BatchItemFailure struct {
		ItemIdentifier string `json:"itemIdentifier"`
	}
)

// Consumer applies cdcbridge events exactly once, whatever the number of
// its instances and however often Kinesis or Lambda deliver a record.
type Consumer struct {
	Store *dedupe.Store
	// Apply does the consumer's work for one change (write to a database,
	// call a service). It may run again for the same event only if a
	// claim expired while it ran (a crash, or work longer than the
	// store's ClaimTimeout).
	Apply func(ctx context.Context, e *cdc.Event) error
	Log   *slog.Logger
}

// errBusy: another instance is applying the event right now.
var errBusy = errors.New("the event is being applied by another instance")

// Handle is the Lambda handler: it applies the batch's records in order
// and, at the first that fails, stops and reports it. Lambda then sends
// that record and every later one again; the records before it count as
// done. Stopping there keeps each row's changes in order: a later change
// of the row is never applied before the failed one.
func (c *Consumer) Handle(ctx context.Context, ev KinesisEvent) (BatchResponse, error) {
	for _, r := range ev.Records {
		if err := c.handleRecord(ctx, r.Kinesis.Data); err != nil {
			c.Log.Warn("record failed; it is retried with every later one", "sequence_number", r.Kinesis.SequenceNumber, "err", err)
			return BatchResponse{BatchItemFailures: []BatchItemFailure{{ItemIdentifier: r.Kinesis.SequenceNumber}}}, nil
		}
	}
	return BatchResponse{}, nil
}

// handleRecord applies the events of one Kinesis record: one envelope, or
// a KPL aggregate of several, gzipped or not. An aggregate retried because
// one of its events failed skips the events already confirmed.
func (c *Consumer) handleRecord(ctx context.Context, data []byte) error {
	payloads := [][]byte{data}
	if kpl.IsAggregated(data) || kpl.IsCompressed(data) {
		urs, err := kpl.Decode(data)
		if err != nil {
			// A record that can never be read would block the shard
			// forever; keep it aside instead (here: log it).
			c.Log.Error("skipping an unreadable aggregate", "err", err)
			return nil
		}
		payloads = payloads[:0]
		for _, ur := range urs {
			payloads = append(payloads, ur.Data)
		}
	}
	for _, p := range payloads {
		e, err := cdc.Decode(p)
		if err != nil {
			c.Log.Error("skipping a record that is not a cdcbridge event", "err", err)
			continue
		}
		if err := c.applyOnce(ctx, e); err != nil {
			return fmt.Errorf("event %s of %s: %w", e.ID, e.Subject, err)
		}
	}
	return nil
}

// applyOnce is the claim, apply, confirm-or-release pattern.
func (c *Consumer) applyOnce(ctx context.Context, e *cdc.Event) error {
	cl, err := c.Store.Claim(ctx, dedupe.Event{Source: e.Source, ID: e.ID, PartitionKey: e.PartitionKey, Sequence: e.Sequence})
	if err != nil {
		return err
	}
	switch cl.Outcome {
	case dedupe.Done, dedupe.Stale:
		return nil // a duplicate, or older than what the row already has
	case dedupe.InProgress:
		return errBusy // retry later: that instance may still fail and release it
	}
	if err := c.Apply(ctx, e); err != nil {
		if rerr := c.Store.Release(ctx, cl); rerr != nil {
			c.Log.Warn("releasing a failed claim", "id", e.ID, "err", rerr) // it expires instead
		}
		return err
	}
	if err := c.Store.Confirm(ctx, cl); err != nil && !errors.Is(err, dedupe.ErrClaimLost) {
		// Applied but not confirmed: it may be applied again once the
		// claim expires, so Apply must be idempotent for such rare cases.
		return err
	}
	return nil
}
