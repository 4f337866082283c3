package verify

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Result is what Compare found. Every field but Records, Written,
// Delivered, Duplicates, Placeholders, DeadLettered and WorstLag must be
// zero for a run to pass (see Problems).
type Result struct {
	Records   int // user records read
	Written   int // changes the workload committed
	Delivered int // of those, found on the stream (first occurrences)

	Missing         int // committed changes not on the stream
	OrderViolations int // first occurrences that go back in a row's history
	// SequenceViolations counts first occurrences whose sequence attribute
	// does not increase within their partition key.
	SequenceViolations int
	Duplicates         int // records repeating an earlier id (allowed)
	DuplicatesDiffer   int // repeats with another sequence or payload
	// Redelivered counts changes found under two different ids: duplicates
	// a consumer could not recognise.
	Redelivered     int
	Unexpected      int // distinct events that match no committed change
	Invalid         int // records that are not valid envelopes
	ContentMismatch int // payloads that differ from what was written
	StateMismatch   int // rows whose last change on the stream is not their final state

	// Reads counts read events (first occurrences of their ids);
	// ReadRows the rows they cover. Reads - ReadRows is how many rows
	// were read again (after a crash, under a new id).
	Reads, ReadRows int

	Placeholders          int // placeholders on the stream (first occurrences)
	PlaceholdersUnmatched int // placeholders without a matching dead-letter entry
	DeadLettered          int // dead-letter entries read

	// WorstLag is the largest time from a change's commit (Change.At, else
	// the event's time) to the arrival of its first occurrence.
	WorstLag time.Duration

	Samples []string // a few examples of each problem
}

// Problems lists what makes the run fail; empty when it passes.
func (r Result) Problems() []string {
	var p []string
	add := func(n int, what string) {
		if n > 0 {
			p = append(p, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Missing, "changes missing")
	add(r.OrderViolations, "per-row order violations")
	add(r.SequenceViolations, "sequence order violations")
	add(r.DuplicatesDiffer, "duplicates that differ from their first occurrence")
	add(r.Redelivered, "changes delivered under two ids")
	add(r.Unexpected, "events matching no committed change")
	add(r.Invalid, "invalid records")
	add(r.ContentMismatch, "payload mismatches")
	add(r.StateMismatch, "rows whose final state differs from the database")
	add(r.PlaceholdersUnmatched, "placeholders without a dead-letter entry")
	return p
}

// Err returns nil when the run passes, else an error listing the problems
// and samples.
func (r Result) Err() error {
	p := r.Problems()
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("%s\n  %s", strings.Join(p, ", "), strings.Join(r.Samples, "\n  "))
}

const maxSamples = 5

// Compare holds the stream's records against the log of committed
// changes and the dead-letter directory (nil when none was configured).
// Records of other sources' events count as unexpected.
func Compare(recs []Record, log *Log, dlq *DLQ) Result {
	res := Result{Records: len(recs)}
	samples := map[string]int{}
	sample := func(kind, format string, args ...any) {
		if samples[kind] < maxSamples {
			samples[kind]++
			res.Samples = append(res.Samples, kind+": "+fmt.Sprintf(format, args...))
		}
	}
	changes := log.Changes()
	res.Written = len(changes)
	want := make(map[string]Change, len(changes))
	versions := map[string]Change{} // row and version -> a change that made it, for reads
	for _, c := range changes {
		want[c.id()] = c
		if c.Op != "delete" {
			versions[fmt.Sprintf("%s %d", c.row(), c.Ver)] = c
		}
	}
	log.mu.Lock()
	for _, c := range log.existing {
		versions[fmt.Sprintf("%s %d", c.row(), c.Ver)] = c
	}
	log.mu.Unlock()
	readRows := map[string]bool{}
	if dlq != nil {
		res.DeadLettered = len(dlq.Entries)
	}

	type firstSeen struct {
		seq  string
		data []byte
	}
	first := map[string]firstSeen{} // source+id -> first occurrence
	deliveredBy := map[string]string{}
	lastSeq := map[string]string{} // source+partition key -> sequence
	maxRank := map[string]int64{}  // row -> highest rank seen
	lastChange := map[string]Change{}
	for _, r := range recs {
		if r.Err != nil {
			res.Invalid++
			sample("invalid", "%s/%s: %v", r.ShardID, r.Sequence, r.Err)
			continue
		}
		e := r.Env
		id := e.Source + " " + e.ID
		if f, ok := first[id]; ok {
			res.Duplicates++
			if f.seq != e.Sequence || !bytes.Equal(f.data, r.Data) {
				res.DuplicatesDiffer++
				sample("duplicate differs", "%s: %s", e.ID, jsonDiff(f.data, r.Data))
			}
			continue
		}
		first[id] = firstSeen{seq: e.Sequence, data: r.Data}
		pk := e.Source + " " + e.PartitionKey
		if s, ok := lastSeq[pk]; ok && e.Sequence != "" && e.Sequence <= s {
			res.SequenceViolations++
			sample("sequence", "%s: %s after %s", e.PartitionKey, e.Sequence, s)
		}
		lastSeq[pk] = e.Sequence

		if log.ignored(e.Subject) {
			continue
		}
		body := e
		if e.IsPlaceholder() {
			res.Placeholders++
			entry, err := dlq.resolve(e)
			if err != nil {
				res.PlaceholdersUnmatched++
				sample("placeholder", "%v", err)
				continue
			}
			body = entry.Env
		}
		c, digest, err := log.identify(body)
		if err != nil {
			res.Unexpected++
			sample("unexpected", "%v", err)
			continue
		}
		if c.Op == "read" {
			// A read is a row as some committed change (or the table
			// before the stream) left it. It may come again after a crash,
			// under a new id; it must never follow a change of its row
			// that it does not reflect.
			res.Reads++
			readRows[c.row()] = true
			v, ok := versions[fmt.Sprintf("%s %d", c.row(), c.Ver)]
			if !ok {
				res.Unexpected++
				sample("unexpected", "read %s: version %d of %s was never written", e.ID, c.Ver, c.row())
				continue
			}
			if v.Digest != "" && digest != "" && v.Digest != digest {
				res.ContentMismatch++
				sample("content", "read %s: payload digest %s, written %s", e.ID, digest, v.Digest)
			}
			row := c.row()
			if m, ok := maxRank[row]; ok && c.rank() < m {
				res.OrderViolations++
				sample("order", "read %s of %s after version rank %d: older than a change already delivered", e.ID, c.id(), m)
			} else {
				maxRank[row] = c.rank()
				lastChange[row] = c
			}
			continue
		}
		w, ok := want[c.id()]
		if !ok {
			res.Unexpected++
			sample("unexpected", "event %s is %s, which the workload did not commit", e.ID, c.id())
			continue
		}
		if prev, dup := deliveredBy[c.id()]; dup {
			res.Redelivered++
			sample("redelivered", "%s arrived as %s and again as %s", c.id(), prev, e.ID)
			continue
		}
		deliveredBy[c.id()] = e.ID
		if committed := w.At; !r.Arrival.IsZero() {
			if committed.IsZero() {
				committed = e.Time
			}
			if !committed.IsZero() {
				res.WorstLag = max(res.WorstLag, r.Arrival.Sub(committed))
			}
		}
		if w.Digest != "" && digest != "" && w.Digest != digest {
			res.ContentMismatch++
			sample("content", "%s: payload digest %s, written %s", c.id(), digest, w.Digest)
		}
		row := c.row()
		if m, ok := maxRank[row]; ok && c.rank() <= m {
			res.OrderViolations++
			sample("order", "%s after version rank %d", c.id(), m)
		} else {
			maxRank[row] = c.rank()
			lastChange[row] = c
		}
	}
	res.Delivered = len(deliveredBy)
	res.ReadRows = len(readRows)
	res.Missing = res.Written - res.Delivered
	if res.Missing > 0 {
		var missing []string
		for id := range want {
			if _, ok := deliveredBy[id]; !ok {
				missing = append(missing, id)
			}
		}
		sort.Strings(missing)
		for _, id := range missing {
			sample("missing", "%s", id)
		}
	}

	log.mu.Lock()
	final := log.final
	log.mu.Unlock()
	for row, ver := range final {
		c, ok := lastChange[row]
		switch {
		case !ok && ver >= 0:
			res.StateMismatch++
			sample("state", "%s has version %d in the database and no change on the stream", row, ver)
		case ok && ver < 0 && c.Op != "delete":
			res.StateMismatch++
			sample("state", "%s is gone from the database, its last change on the stream is %s %d", row, c.Op, c.Ver)
		case ok && ver >= 0 && (c.Op == "delete" || c.Ver != ver):
			res.StateMismatch++
			sample("state", "%s has version %d in the database, its last change on the stream is %s %d", row, ver, c.Op, c.Ver)
		}
	}
	return res
}
