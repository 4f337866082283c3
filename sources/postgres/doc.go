// Package postgres captures committed changes of PostgreSQL tables through
// logical replication (pgoutput) and emits them as cdc.Events in commit
// order.
//
// Guarantees:
//
//   - Nothing is skipped. The slot's confirmed position is the end LSN of
//     the last transaction whose every event the sink acknowledged (and
//     every earlier one too); it never moves backwards and never passes an
//     unacknowledged event or an open transaction. A crash, a reconnect or
//     a server restart resumes from the slot and re-sends at most what was
//     not yet confirmed, with the same ids.
//   - An idle or fully filtered slot does not hold WAL: with nothing in
//     flight and no transaction open, the keepalive's WAL position is
//     confirmed.
//   - Standby status updates are sent by the goroutine that owns the
//     replication connection, at least every third of wal_sender_timeout,
//     also while the sink blocks.
//   - Memory is bounded by the receive queue and the sink's in-flight
//     budget, whatever the size of a transaction: events are emitted as
//     they are decoded; only the latest one is held back until the next
//     change or the commit shows whether it is the transaction's last.
//   - The initial snapshot is read in the slot's exported snapshot and
//     counts as complete only once every read event is acknowledged; the
//     stream then starts at the slot's consistent point (no gap, no
//     overlap). A snapshot interrupted by a crash is started over with a
//     new slot.
//   - A slot this bridge streamed from that is gone or invalidated, that
//     something moved past what the bridge confirmed (the checkpoint store
//     learns each position before the server does), or that another
//     cluster now answers for, is never silently replaced or trusted
//     (CDCBRIDGE_POSTGRES_ON_SLOT_LOST decides). A failover slot
//     (PostgreSQL 17+) survives the promotion of a standby that kept a
//     synced copy; streaming resumes from that copy, at or behind the
//     last confirmed position.
//   - One instance per slot streams: the holder of a session-level advisory
//     lock derived from the slot name. It stops at once when the lock's
//     connection breaks; standbys wait on the lock and take over.
//   - The publications the bridge creates never make the user's UPDATE or
//     DELETE fail: tables without a replica identity are published for
//     inserts only.
//
// Values follow PostgreSQL's to_jsonb; README.md lists each type's form.
package postgres
