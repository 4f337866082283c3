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
	"bytes"
	"context"
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

	"github.com/cdcbridge/cdcbridge/sink/kinesis/kpl"
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

func (s *Server) describeStreamSummary(w http.ResponseWriter, r *http.Request, body []byte) {
	var summary map[string]any
	if s.null != nil {
		var in struct{ StreamName, StreamARN string }
		if err := json.Unmarshal(body, &in); err != nil {
			writeError(w, "SerializationException", err.Error())
			return
		}
		s.mu.Lock()
		code, msg := s.null.checkName(in.StreamName, in.StreamARN)
		summary = s.null.summary()
		s.mu.Unlock()
		if code != "" {
			writeError(w, code, msg)
			return
		}
	} else {
		status, respBody, err := s.roundTrip(r, body)
		if err != nil {
			writeError(w, "InternalFailure", "upstream: "+err.Error())
			return
		}
		if status != http.StatusOK {
			s.relay(w, status, respBody)
			return
		}
		var out struct{ StreamDescriptionSummary map[string]any }
		if err := json.Unmarshal(respBody, &out); err != nil || out.StreamDescriptionSummary == nil {
			s.relay(w, status, respBody)
			return
		}
		summary = out.StreamDescriptionSummary
	}
	s.mu.Lock()
	o := s.overrides
	s.mu.Unlock()
	if o.MaxRecordSizeInKiB != nil {
		summary["MaxRecordSizeInKiB"] = *o.MaxRecordSizeInKiB
	}
	if o.RecordDistributionStrategy != nil {
		summary["RecordDistributionStrategy"] = *o.RecordDistributionStrategy
	}
	if o.StreamMode != nil {
		summary["StreamModeDetails"] = map[string]any{"StreamMode": *o.StreamMode}
	}
	if o.StreamStatus != nil {
		summary["StreamStatus"] = *o.StreamStatus
	}
	b, _ := json.Marshal(map[string]any{"StreamDescriptionSummary": summary})
	writeJSON(w, http.StatusOK, b)
}

// maxRecordBytes is the record limit (data plus partition key) enforced.
func (s *Server) maxRecordBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overrides.MaxRecordSizeInKiB != nil {
		return int(*s.overrides.MaxRecordSizeInKiB) << 10
	}
	return 1 << 20
}

// checkLimits returns the error AWS gives a request over its limits.
func (s *Server) checkLimits(in *putRecordsInput) (code, msg string) {
	if len(in.Records) == 0 || len(in.Records) > s.limits.MaxRecords {
		return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records' failed to satisfy constraint: Member must have length between 1 and %d (got %d)", s.limits.MaxRecords, len(in.Records))
	}
	maxRecord := s.maxRecordBytes()
	total := 0
	for i, e := range in.Records {
		n := len([]rune(e.PartitionKey))
		if n < 1 || n > s.limits.MaxKeyLen {
			return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records.%d.member.partitionKey' failed to satisfy constraint: Member must have length between 1 and %d", i+1, s.limits.MaxKeyLen)
		}
		size := len(e.Data) + len(e.PartitionKey)
		if size > maxRecord {
			return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records.%d.member.data' failed to satisfy constraint: record of %d bytes (data and partition key) exceeds %d", i+1, size, maxRecord)
		}
		if e.ExplicitHashKey != nil {
			if _, ok := parseHashKey(*e.ExplicitHashKey); !ok {
				return "InvalidArgumentException", "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was " + *e.ExplicitHashKey
			}
		}
		total += size
	}
	if total > s.limits.MaxRequestBytes {
		return "InvalidArgumentException", fmt.Sprintf("Records size exceeds %d bytes limit (got %d)", s.limits.MaxRequestBytes, total)
	}
	return "", ""
}

func (s *Server) putRecords(w http.ResponseWriter, r *http.Request, body []byte, f Faults) {
	s.c.putRequests.Add(1)
	var in putRecordsInput
	if err := json.Unmarshal(body, &in); err != nil {
		s.c.rejected.Add(1)
		writeError(w, "SerializationException", err.Error())
		return
	}
	s.c.entries.Add(int64(len(in.Records)))
	if code, msg := s.checkLimits(&in); code != "" {
		s.c.rejected.Add(1)
		writeError(w, code, msg)
		return
	}
	if len(f.Poison) > 0 {
		for i, e := range in.Records {
			if bytes.Contains(e.Data, f.Poison) {
				s.c.rejected.Add(1)
				writeError(w, "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records.%d.member.data' failed to satisfy constraint: injected poison record", i+1))
				return
			}
		}
	}
	if s.chance(f.FailRequests) {
		s.c.failedRequests.Add(1)
		code := f.RequestError
		if code == "" {
			code = "InternalFailure"
		}
		writeError(w, code, "injected "+code)
		return
	}
	if f.Delay > 0 && s.chance(f.SlowRequests) {
		s.c.slow.Add(1)
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
			return
		}
	}

	// Entries picked for an injected failure are not applied.
	out := putRecordsOutput{Records: make([]putRecordsOutputEntry, len(in.Records))}
	apply := make([]int, 0, len(in.Records))
	for i := range in.Records {
		switch {
		case s.chance(f.ThrottleEntries):
			out.Records[i] = putRecordsOutputEntry{ErrorCode: "ProvisionedThroughputExceededException",
				ErrorMessage: "Rate exceeded for shard in stream under account 000000000000. (injected)"}
		case s.chance(f.FailEntries):
			out.Records[i] = putRecordsOutputEntry{ErrorCode: "InternalFailure", ErrorMessage: "Internal service failure. (injected)"}
		default:
			apply = append(apply, i)
			continue
		}
		out.FailedRecordCount++
		s.c.failedEntries.Add(1)
	}

	if len(apply) > 0 {
		var ok bool
		if s.null != nil {
			ok = s.applyNull(w, &in, apply, &out)
		} else {
			ok = s.applyUpstream(w, r, &in, apply, &out)
		}
		if !ok {
			return
		}
	}

	resp := appendPutRecordsOutput(make([]byte, 0, 64+len(out.Records)*100), &out)
	if len(apply) > 0 && s.chance(f.LoseResponses) {
		s.c.lost.Add(1)
		s.lose(w, r, f.LoseMode, resp)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// applyNull routes and accepts the picked entries on the null stream.
func (s *Server) applyNull(w http.ResponseWriter, in *putRecordsInput, apply []int, out *putRecordsOutput) bool {
	s.mu.Lock()
	if code, msg := s.null.checkName(in.StreamName, in.StreamARN); code != "" {
		s.mu.Unlock()
		writeError(w, code, msg)
		return false
	}
	if st := s.null.status; st != "ACTIVE" && st != "UPDATING" {
		s.mu.Unlock()
		writeError(w, "ResourceNotFoundException", "Stream "+s.null.name+" is "+st)
		return false
	}
	for _, i := range apply {
		e := &in.Records[i]
		var h hashKey
		if e.ExplicitHashKey != nil {
			h, _ = parseHashKey(*e.ExplicitHashKey)
		} else {
			h = hashOf(e.PartitionKey)
		}
		sh := s.null.route(h)
		out.Records[i] = putRecordsOutputEntry{ShardId: sh.id, SequenceNumber: s.null.nextSeq()}
	}
	s.mu.Unlock()
	s.accept(in, apply, out)
	return true
}

// applyUpstream sends the picked entries upstream and merges the answer.
func (s *Server) applyUpstream(w http.ResponseWriter, r *http.Request, in *putRecordsInput, apply []int, out *putRecordsOutput) bool {
	sub := putRecordsInput{StreamName: in.StreamName, StreamARN: in.StreamARN, Records: make([]putRecordsInputEntry, len(apply))}
	for j, i := range apply {
		sub.Records[j] = in.Records[i]
	}
	body, _ := json.Marshal(&sub)
	status, respBody, err := s.roundTrip(r, body)
	if err != nil {
		s.c.upstreamErrors.Add(1)
		writeError(w, "InternalFailure", "upstream: "+err.Error())
		return false
	}
	if status != http.StatusOK {
		s.c.upstreamErrors.Add(1)
		s.relay(w, status, respBody)
		return false
	}
	var up putRecordsOutput
	if err := json.Unmarshal(respBody, &up); err != nil || len(up.Records) != len(apply) {
		s.c.upstreamErrors.Add(1)
		writeError(w, "InternalFailure", fmt.Sprintf("upstream answer does not match the request (%v)", err))
		return false
	}
	for j, i := range apply {
		out.Records[i] = up.Records[j]
		if up.Records[j].ErrorCode != "" {
			out.FailedRecordCount++
		}
	}
	s.accept(in, apply, out)
	return true
}

// accept counts, keeps and reports the successful entries among apply.
func (s *Server) accept(in *putRecordsInput, apply []int, out *putRecordsOutput) {
	keep := s.opts.Keep || s.opts.OnAccept != nil
	var scratch []kpl.UserRecord
	var users, userBytes, aggs int64
	if keep {
		s.acceptMu.Lock()
		defer s.acceptMu.Unlock()
	}
	for _, i := range apply {
		o := &out.Records[i]
		if o.ErrorCode != "" {
			continue
		}
		e := &in.Records[i]
		rec := Record{ShardID: o.ShardId, SequenceNumber: o.SequenceNumber, PartitionKey: e.PartitionKey, Data: e.Data}
		if e.ExplicitHashKey != nil {
			rec.ExplicitHashKey = *e.ExplicitHashKey
		}
		if kpl.IsAggregated(e.Data) {
			var err error
			scratch, err = kpl.AppendDecode(scratch[:0], e.Data)
			if err != nil {
				s.c.decodeErrors.Add(1)
			} else {
				aggs++
				rec.Aggregated = true
				users += int64(len(scratch))
				for _, u := range scratch {
					userBytes += int64(len(u.Data))
				}
				if keep {
					rec.Users = append([]kpl.UserRecord(nil), scratch...)
				}
			}
		} else {
			users++
			userBytes += int64(len(e.Data))
			if keep {
				rec.Users = []kpl.UserRecord{{PartitionKey: e.PartitionKey, Data: e.Data}}
			}
		}
		s.c.accepted.Add(1)
		if keep {
			if s.opts.Keep {
				s.kept = append(s.kept, rec)
			}
			if s.opts.OnAccept != nil {
				s.opts.OnAccept(rec)
			}
		}
	}
	s.c.userRecords.Add(users)
	s.c.userBytes.Add(userBytes)
	s.c.aggregates.Add(aggs)
}

// lose applies the chosen way of losing an answer.
func (s *Server) lose(w http.ResponseWriter, r *http.Request, mode LoseMode, resp []byte) {
	if mode == Hang {
		t := time.NewTimer(5 * time.Minute)
		defer t.Stop()
		select {
		case <-r.Context().Done():
		case <-s.closing:
		case <-t.C:
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	switch mode {
	case Truncate:
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", contentType, len(resp))
		_, _ = buf.Write(resp[:len(resp)/2])
		_ = buf.Flush()
	default:
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
	}
	_ = conn.Close()
}

// roundTrip sends body to the upstream with the client's headers. The
// upstream call does not follow the client's context: a request the
// client gave up on is still applied, as AWS would.
func (s *Server) roundTrip(r *http.Request, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Accept-Encoding", "Connection":
			continue
		}
		req.Header[k] = v
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (s *Server) relay(w http.ResponseWriter, status int, body []byte) {
	var e struct {
		Type string `json:"__type"`
	}
	if json.Unmarshal(body, &e) == nil && e.Type != "" {
		code := e.Type
		if i := strings.LastIndexByte(code, '#'); i >= 0 {
			code = code[i+1:]
		}
		w.Header().Set("X-Amzn-Errortype", code)
	}
	writeJSON(w, status, body)
}

func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	status, respBody, err := s.roundTrip(r, body)
	if err != nil {
		writeError(w, "InternalFailure", "upstream: "+err.Error())
		return
	}
	s.relay(w, status, respBody)
}
