// Package kinesisfake is a Kinesis Data Streams endpoint for tests and
// benchmarks. It speaks Kinesis's JSON 1.1 protocol over HTTP and runs in
// one of two modes:
//
//   - forward (Options.Upstream set): every request goes to an upstream
//     Kinesis such as kinesalite; PutRecords is first checked against AWS's
//     limits, which the emulators do not all enforce, and is subject to the
//     injected faults.
//   - null (no upstream): the server holds one stream's shard map in
//     memory, answers DescribeStreamSummary, ListShards and PutRecords
//     alone, decodes (and de-aggregates) what it is sent, counts it and
//     answers success with realistic shard ids and sequence numbers.
//
// Faults (Server.SetFaults) can be changed while clients run: per-entry
// throttling and internal failures, whole-request errors, responses lost
// after the records were applied (reset, hang, truncated body: ambiguous
// outcomes), slow responses, a poison record rejected with
// ValidationException, and errors for any operation. Resharding is done on
// the upstream in forward mode and with Split and Merge in null mode.
//
// Guarantee for tests: OnAccept (and Records, with Options.Keep) sees a
// record before the response that reports it accepted is written, so a
// client cannot learn of an acceptance the fake has not recorded.
package kinesisfake

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdcbridge/cdcbridge/kpl"
)

// Options configure a Server. The zero value is a null-mode server with
// one 4-shard provisioned stream named "null".
type Options struct {
	// Upstream is the URL of the Kinesis to forward to; empty selects null mode.
	Upstream string

	// Null mode: the stream's name (default "null"), open shard count
	// (default 4) and capacity mode.
	StreamName string
	Shards     int
	OnDemand   bool

	// Limits enforced on PutRecords; zero fields take AWS's defaults.
	Limits Limits

	// Keep stores every accepted record for Records. Off, the server only counts.
	Keep bool
	// OnAccept, when set, is called for every accepted record before the
	// response that reports it is written. Calls are serialised.
	OnAccept func(Record)

	// Seed makes the fault decisions repeatable.
	Seed uint64

	// Listener to serve on instead of a new loopback one.
	Listener net.Listener
}

// Limits are AWS's PutRecords limits.
type Limits struct {
	MaxRecords      int // records per request: 500
	MaxRequestBytes int // data plus partition keys per request: 5 MiB
	MaxKeyLen       int // partition key characters: 256
}

func (l Limits) withDefaults() Limits {
	if l.MaxRecords == 0 {
		l.MaxRecords = 500
	}
	if l.MaxRequestBytes == 0 {
		l.MaxRequestBytes = 5 << 20
	}
	if l.MaxKeyLen == 0 {
		l.MaxKeyLen = 256
	}
	return l
}

// LoseMode says how a lost response is lost.
type LoseMode int

const (
	// Reset closes the connection with a TCP reset instead of answering.
	Reset LoseMode = iota
	// Hang holds the connection without answering until the client gives up.
	Hang
	// Truncate sends the headers and half the body, then closes.
	Truncate
)

// Faults are injected into PutRecords (and, with Errors, any operation).
// Rates are fractions in [0, 1].
type Faults struct {
	ThrottleEntries float64 // entries answered ProvisionedThroughputExceededException, not applied
	FailEntries     float64 // entries answered InternalFailure, not applied

	FailRequests float64 // requests answered with RequestError, not applied
	RequestError string  // default InternalFailure (HTTP 500)

	LoseResponses float64  // requests applied whose response is then lost
	LoseMode      LoseMode // how

	SlowRequests float64       // requests held for Delay before they are handled
	Delay        time.Duration // and applied even when the client has gone by then

	// Poison: a request holding a record whose data contains it is
	// rejected whole with ValidationException.
	Poison []byte

	// Errors answers every request of an operation ("DescribeStreamSummary")
	// with an error code ("AccessDeniedException").
	Errors map[string]string
}

// Overrides patch DescribeStreamSummary answers (both modes) and, for the
// record size, the limit the fake enforces. Nil fields leave the answer alone.
type Overrides struct {
	MaxRecordSizeInKiB         *int32
	RecordDistributionStrategy *string
	StreamMode                 *string
	StreamStatus               *string
}

// Record is one accepted Kinesis record.
type Record struct {
	ShardID         string
	SequenceNumber  string
	PartitionKey    string
	ExplicitHashKey string // empty when the request carried none
	Data            []byte
	// Users are the user records: the de-aggregated content of a KPL
	// aggregate, or the record itself.
	Users      []kpl.UserRecord
	Aggregated bool
	Compressed bool // a compressed aggregate
}

// Counts are the server's counters.
type Counts struct {
	Requests        int64 // every request
	PutRequests     int64 // PutRecords requests
	Entries         int64 // PutRecords entries received
	Accepted        int64 // Kinesis records accepted
	UserRecords     int64 // user records accepted (aggregates de-aggregated)
	UserBytes       int64 // their data bytes
	Aggregates      int64 // accepted records that were KPL aggregates
	FailedEntries   int64 // entries answered with an injected per-entry error
	FailedRequests  int64 // requests answered with an injected error
	Rejected        int64 // requests rejected for a limit or a poison record
	LostResponses   int64 // applied requests whose response was lost
	SlowRequests    int64
	DecodeErrors    int64 // aggregates that did not decode
	UpstreamErrors  int64 // PutRecords errors from the upstream, relayed
	ShardMapQueries int64 // ListShards requests
}

// Server is a fake Kinesis endpoint. Its methods are safe for concurrent use.
type Server struct {
	// URL is the endpoint's base URL (http://127.0.0.1:port).
	URL string

	opts     Options
	limits   Limits
	srv      *httptest.Server
	upstream string
	client   *http.Client
	closing  chan struct{}
	closeMu  sync.Once

	mu        sync.Mutex // guards the fields below
	faults    Faults
	overrides Overrides
	rng       *rand.Rand
	null      *nullStream
	kept      []Record

	acceptMu sync.Mutex // serialises OnAccept and kept

	c struct {
		requests, putRequests, entries, accepted, userRecords, userBytes, aggregates,
		failedEntries, failedRequests, rejected, lost, slow, decodeErrors, upstreamErrors,
		listShards atomic.Int64
	}
}

// New starts a Server.
func New(opts Options) *Server {
	s := &Server{
		opts:     opts,
		limits:   opts.Limits.withDefaults(),
		upstream: strings.TrimRight(opts.Upstream, "/"),
		closing:  make(chan struct{}),
		rng:      rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
	}
	if s.upstream == "" {
		name := opts.StreamName
		if name == "" {
			name = "null"
		}
		shards := opts.Shards
		if shards <= 0 {
			shards = 4
		}
		s.null = newNullStream(name, shards, opts.OnDemand)
	} else {
		s.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	}
	s.srv = httptest.NewUnstartedServer(s)
	if opts.Listener != nil {
		s.srv.Listener.Close()
		s.srv.Listener = opts.Listener
	}
	s.srv.Config.ErrorLog = nil
	s.srv.Start()
	s.URL = s.srv.URL
	return s
}

// Close stops the server; held (hanging) requests are released first.
func (s *Server) Close() {
	s.closeMu.Do(func() { close(s.closing) })
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// SetFaults replaces the injected faults.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// Faults returns the injected faults.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// SetOverrides replaces the DescribeStreamSummary overrides.
func (s *Server) SetOverrides(o Overrides) {
	s.mu.Lock()
	s.overrides = o
	s.mu.Unlock()
}

// Counts returns a snapshot of the counters.
func (s *Server) Counts() Counts {
	return Counts{
		Requests:        s.c.requests.Load(),
		PutRequests:     s.c.putRequests.Load(),
		Entries:         s.c.entries.Load(),
		Accepted:        s.c.accepted.Load(),
		UserRecords:     s.c.userRecords.Load(),
		UserBytes:       s.c.userBytes.Load(),
		Aggregates:      s.c.aggregates.Load(),
		FailedEntries:   s.c.failedEntries.Load(),
		FailedRequests:  s.c.failedRequests.Load(),
		Rejected:        s.c.rejected.Load(),
		LostResponses:   s.c.lost.Load(),
		SlowRequests:    s.c.slow.Load(),
		DecodeErrors:    s.c.decodeErrors.Load(),
		UpstreamErrors:  s.c.upstreamErrors.Load(),
		ShardMapQueries: s.c.listShards.Load(),
	}
}

// Records returns the accepted records in acceptance order (Options.Keep).
func (s *Server) Records() []Record {
	s.acceptMu.Lock()
	defer s.acceptMu.Unlock()
	return append([]Record(nil), s.kept...)
}

// Split splits an open shard of the null-mode stream in two halves and
// returns the children's ids.
func (s *Server) Split(shardID string) ([2]string, error) {
	if s.null == nil {
		return [2]string{}, fmt.Errorf("kinesisfake: Split is for null mode; reshard the upstream")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.null.split(shardID)
}

// Merge merges two adjacent open shards of the null-mode stream.
func (s *Server) Merge(shard1, shard2 string) (string, error) {
	if s.null == nil {
		return "", fmt.Errorf("kinesisfake: Merge is for null mode; reshard the upstream")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.null.merge(shard1, shard2)
}

// OpenShards returns the ids of the null-mode stream's open shards.
func (s *Server) OpenShards() []string {
	if s.null == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, sh := range s.null.openShards() {
		ids = append(ids, sh.id)
	}
	return ids
}

// SetStreamStatus sets the null-mode stream's status ("DELETING",
// "DELETED" makes it not found).
func (s *Server) SetStreamStatus(status string) {
	if s.null == nil {
		return
	}
	s.mu.Lock()
	s.null.status = status
	s.mu.Unlock()
}

func (s *Server) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	if p >= 1 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < p
}

// ServeHTTP dispatches on X-Amz-Target.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.c.requests.Add(1)
	if r.Method == http.MethodGet && r.URL.Path == "/_fake/counts" {
		b, _ := json.Marshal(s.Counts())
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		return
	}
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, targetPrefix)
	if !ok {
		writeError(w, "UnknownOperationException", "missing or unknown X-Amz-Target "+target)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	s.mu.Lock()
	f := s.faults
	s.mu.Unlock()
	if code := f.Errors[op]; code != "" {
		writeError(w, code, "injected "+code+" for "+op)
		return
	}
	switch op {
	case "PutRecords":
		s.putRecords(w, r, body, f)
	case "DescribeStreamSummary":
		s.describeStreamSummary(w, r, body)
	case "ListShards":
		s.c.listShards.Add(1)
		if s.null == nil {
			s.forward(w, r, body)
			return
		}
		s.mu.Lock()
		out, code, msg := s.null.listShards(body)
		s.mu.Unlock()
		if code != "" {
			writeError(w, code, msg)
			return
		}
		writeJSON(w, http.StatusOK, out)
	default:
		if s.null == nil {
			s.forward(w, r, body)
			return
		}
		writeError(w, "UnknownOperationException", "the null endpoint does not implement "+op)
	}
}
