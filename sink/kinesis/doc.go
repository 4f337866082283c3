// Package kinesis is cdcbridge's sink: a batching, ordered, retrying
// PutRecords producer for one Kinesis data stream.
//
// # Guarantees
//
//   - Nothing is lost. Every event's Ack is called exactly once, and only
//     after Kinesis accepted its record (or, for a dead-lettered event,
//     after the dead-letter line was written and fsynced and its
//     placeholder was accepted). Failed entries and failed requests are
//     retried without limit; an outcome that is not known (a timeout, a
//     reset, a truncated answer) is treated as a failure and sent again,
//     so the stream may hold duplicates (same id and sequence), never gaps.
//     When the producer stops (fatal error or shutdown) nothing unaccepted
//     is acked, so the source resumes from its checkpoint. A dead-letter
//     line that cannot be written (disk full, directory gone) is retried
//     for DLQFailureLimit, then the producer stops with an error naming
//     the directory rather than hold the event forever.
//   - Per-key order (OrderingKey, the default). Reading a shard and keeping
//     the first occurrence of each id, every partition key's records appear
//     in the order Put received them, under partial failures, throttling,
//     ambiguous timeouts, retries, resharding and dead-lettering: a key
//     never has two records in flight (an aggregated record counts as one:
//     it succeeds or fails as a whole), a failed record is retried before
//     any later record of its key is sent, and accepted records are acked
//     at once and never sent again.
//   - Truncate barrier: an event with Op == cdc.OpTruncate is sent only
//     once every earlier event of its table (Event.Subject) is accepted,
//     and no later event of the table is sent before it is accepted.
//   - Bounded memory: Put blocks while MaxInFlightBytes or
//     MaxInFlightEvents is used up. A record is charged its envelope
//     buffer's capacity (size classes 1.5x apart), its partition key and a
//     fixed overhead; the producer keeps the envelope and OnAck, not the
//     caller's event. An event larger than the whole budget is admitted
//     when nothing else is in flight. The body of each request in flight
//     (base64: 4/3 of the request's bytes) and its aggregates count in
//     the same budget until the request ends, so Put also waits while
//     they fill it. Beyond the budget the producer keeps only idle request
//     bodies, at most MaxInFlight (a bounded free list).
//
// # Batching and the hot-key bound
//
// Records wait in per-shard ready lists; a request is sent when 500
// records or MaxRequestBytes are ready, when Linger has passed, or at once
// when a ready record is urgent: its key's previous record was just
// accepted, its retry backoff ended, or Flush is waiting. Up to MaxInFlight
// requests run concurrently; keys that are not blocked fill full batches.
//
// Because a key has one record in flight at a time, a single hot key moves
// at one record per PutRecords round trip: about 1/RTT records per second
// (50 records/s at a 20 ms round trip; about 1,000/s against a local
// endpoint). Aggregation lifts the bound: a key's queued
// records go out together in one aggregated record (up to
// AggregateMaxBytes), so a hot key moves a whole run per round trip.
// AggregateHot does that for hot keys only: a key with one record queued
// goes out plain, a key with more sends its run as one aggregate (never
// two entries of a key in one request, whose order PutRecords does not
// keep), so consumers meet aggregates only for keys that were hot.
// OrderingNone lifts it differently: records of one key share requests
// and are retried independently, so after a partial failure, a throttled
// entry or a timeout a key's records may reach the stream out of Put order
// (a consumer must then order by the sequence attribute), and truncates
// remain barriers only in time, not per key.
//
// # Shards
//
// DescribeStreamSummary gives the stream's status, ARN, record size limit
// (MaxRecordSizeInKiB, 1024 when absent; the producer honours data plus
// partition key against it, capped at MaxRequestBytes), capacity mode,
// record distribution strategy and shard count; it is read again every
// SummaryInterval. ListShards gives the open shards' hash key ranges; each
// record's shard is predicted from the MD5 of its partition key. Per-shard
// token buckets (ShardHeadroom of 1 MiB/s and 1000 records/s, bursting to
// at least the largest allowed record) pace the producer below the shard
// limits; throttled entries still back off, and each is charged to its
// shard's bucket again, so the shard slows in proportion. A put result
// whose ShardId differs from the prediction (a split or merge happened)
// reloads the map (at most once a second; not on AUTO streams, where
// placement is not predictable). A stream whose RecordDistributionStrategy
// is AUTO ignores partition keys: it is refused with OrderingKey and with
// aggregation, at start and when the strategy changes at run time.
//
// # Aggregation
//
// With Aggregate, records predicted for one shard are packed into KPL
// aggregated records carrying that shard's starting hash key as explicit
// hash key, so KCL de-aggregation (which drops user records whose hash key
// is outside the shard it reads) keeps them all. When an aggregate lands in
// another shard than predicted, the map is reloaded and the aggregate's
// records are put again, regrouped (their keys stay blocked meanwhile); the
// stale copy is what KCL partly drops. A lone record is sent plain.
//
// # Retries, timeouts and the two retry layers
//
// The SDK client made by NewClient does not retry (aws.NopRetryer): each
// DescribeStreamSummary or ListShards call is one HTTP attempt.
// PutRecords does not go through the SDK's operation stack at all: the
// producer writes the request itself (see wire.go) with the client's
// endpoint resolver, credentials, SigV4 signer and HTTP client, one
// attempt per call. ConnectTimeout bounds dialing plus the TLS
// handshake together; RequestTimeout bounds one attempt, connecting
// included. The producer is the only retry layer, so no wait is multiplied
// by hidden SDK attempts, the SDK's client-side retry quota never fails a
// request on its own, and every attempt shows in the metrics:
//
//   - Failed entries (ProvisionedThroughputExceededException,
//     InternalFailure, any unknown code): the entry's key waits
//     RetryBase*2^(n-1) capped at RetryMax, with full jitter, then its
//     record goes in the next request.
//   - Retryable request errors (throttling, KMSThrottlingException, 5xx,
//     timeouts, resets, truncated answers, unknown codes, expired
//     credentials, which are refreshed first): the same backoff for the
//     whole producer, then one request at a time until one succeeds.
//   - Invalid requests (ValidationException, InvalidArgumentException,
//     SerializationException): the request is split in halves until the
//     offending record is alone; it goes to the dead-letter directory
//     (OversizeDLQ) or stops the producer (OversizeFail). A rejected
//     placeholder stops the producer.
//   - Errors no retry can fix (stream not found or deleted, access or KMS
//     key denied, disabled, missing, invalid or not opted in, credentials
//     refused) stop the producer with an error naming the stream and cause.
//
// While retries keep failing, Status reports why (Degraded) and the
// metrics count requests by result and failed entries by code; readiness
// does not change.
//
// # Partition keys
//
// The record's partition key is the event's, as its source built it with
// cdc.PartitionKey (at most 256 bytes: longer keys are already in their
// hashed form), so the envelope and the record carry the same key. Put
// never writes to the event; it refuses one whose key is empty, over 256
// bytes or not UTF-8, which a source must not emit.
//
// # Oversize and poison records
//
// A record over the stream's limit (OversizeDLQ) or rejected as invalid is
// written to the dead-letter directory (see dlq.go for the format) and a
// placeholder with the same id, sequence and partition key and
// data.oversize = {"bytes": N, "dlq": "<file>#<line>"} takes its place in
// its key's order. Such events are counted in cdcbridge_dlq_records_total
// and logged with their id and table, never their payload.
package kinesis
