// Package chaos is cdcbridge's reliability suite: end-to-end scenarios
// that run the built binary as a separate process against real
// PostgreSQL 15, kinesalite and DynamoDB Local, break it the way users
// will (kill -9, Kinesis faults and outages, database restarts and TCP
// resets, DynamoDB Streams faults and a shard split, disk faults, SIGTERM,
// bad configuration and awkward rows), and hold what reached the stream
// against what a seeded workload committed, with the independent verifier
// in test/verify.
//
// The package holds the pieces the scenarios (its tests) are built from:
// Bridge runs and restarts the binary; PGWorkload and DDBWorkload write a
// bounded, seeded mix of changes and log each committed one; Proxy cuts
// and blackholes TCP connections and resets answers mid-body; StreamsProxy
// expires iterators, throttles and splits a DynamoDB Streams shard;
// Mangler spoils AWS answers; BreakDir, FullDir and LimitFileSize make
// disks fail for root too. Report collects the table `make chaos` prints.
//
// `make test` runs the short form. CHAOS_LONG=1 selects the long form
// (`make chaos`), CHAOS_SEED replays a run's decisions, CHAOS_BINARY names
// the binary to test (default: built from the tree, with -race when the
// tests run with it) and CHAOS_REPORT a file for the table.
package chaos
