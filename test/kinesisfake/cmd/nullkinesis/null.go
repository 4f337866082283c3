package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cdcbridge/cdcbridge/hashkey"
	"github.com/cdcbridge/cdcbridge/kpl"
)

// AWS's fixed PutRecords limits.
const (
	maxRecords  = 500
	maxKeyChars = 256
)

// limits are the PutRecords limits a stream may move.
type limits struct {
	maxRequestBytes int // data plus partition keys
	maxRecordBytes  int // data plus partition key
}

// Counts are the endpoint's counters.
type Counts struct {
	Requests     int64 // Kinesis API requests
	PutRequests  int64
	Entries      int64 // PutRecords entries received
	Accepted     int64 // Kinesis records accepted
	UserRecords  int64 // user records accepted (aggregates de-aggregated)
	UserBytes    int64
	Aggregates   int64
	DecodeErrors int64 // aggregates that did not decode
	BadEnvelopes int64 // user records that are not cdcbridge envelopes
	Unique       int64 // distinct envelope ids among the user records
	Rejected     int64 // requests rejected (limits, stream name, malformed)
	// OrderViolations (with -check-order) counts user records seen for
	// the first time whose sequence is below the highest seen before for
	// their partition key: zero when every row's changes came in order.
	OrderViolations int64
	// TopKeyRecords (with -check-order) is the number of distinct changes
	// of the partition key that has the most.
	TopKeyRecords int64
	// TopShardBytes is the most record bytes (data and partition keys,
	// aggregates as sent) one shard accepted: what counts against a
	// shard's 1 MiB/s.
	TopShardBytes int64
}

type null struct {
	stream, arn string
	m           *shardMap
	fake        http.Handler
	lim         limits
	lat         *latencies
	delay       time.Duration     // before each PutRecords answer
	last        map[uint64]string // with -check-order: the highest sequence per partition key (hashed); under mu
	perKey      map[uint64]int64  // with -check-order: distinct changes per partition key; under mu
	topKey      int64             // the largest of perKey; under mu

	seq  atomic.Uint64
	c    [13]atomic.Int64 // in Counts' field order
	mu   sync.Mutex
	ids  map[uint64]struct{}
	seed maphash.Seed

	scratch sync.Pool // *request
}

const (
	cRequests = iota
	cPutRequests
	cEntries
	cAccepted
	cUserRecords
	cUserBytes
	cAggregates
	cDecodeErrors
	cBadEnvelopes
	cUnique
	cRejected
	cOrderViolations
	cTopKeyRecords
)

func newNull(stream string, m *shardMap, fake http.Handler, lim limits) *null {
	return &null{
		stream: stream,
		arn:    "arn:aws:kinesis:us-east-1:000000000000:stream/" + stream,
		m:      m,
		fake:   fake,
		lim:    lim,
		ids:    make(map[uint64]struct{}, 1<<20),
		seed:   maphash.MakeSeed(),
	}
}

func (n *null) counts() Counts {
	v := func(i int) int64 { return n.c[i].Load() }
	return Counts{v(cRequests), v(cPutRequests), v(cEntries), v(cAccepted), v(cUserRecords), v(cUserBytes),
		v(cAggregates), v(cDecodeErrors), v(cBadEnvelopes), v(cUnique), v(cRejected), v(cOrderViolations), v(cTopKeyRecords),
		n.m.topBytes()}
}

func (n *null) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		switch r.URL.Path {
		case "/_fake/counts":
			writeStats(w, n.counts())
			return
		case "/_fake/latency":
			var sum Summary
			if n.lat != nil {
				sum = n.lat.summary(r.URL.Query().Get("reset") == "1")
			}
			writeStats(w, sum)
			return
		}
	}
	n.c[cRequests].Add(1)
	if r.Header.Get("X-Amz-Target") != "Kinesis_20131202.PutRecords" {
		n.fake.ServeHTTP(w, r)
		return
	}
	n.c[cPutRequests].Add(1)
	q, _ := n.scratch.Get().(*request)
	if q == nil {
		q = &request{}
	}
	defer n.scratch.Put(q)
	var err error
	if q.body, err = readBody(q.body[:0], r); err != nil {
		return
	}
	received := time.Now()
	code, msg := q.parse()
	if code == "" {
		code, msg = n.check(q)
	}
	if code != "" {
		n.c[cRejected].Add(1)
		writeError(w, code, msg)
		return
	}
	n.accept(q, received)
	if n.delay > 0 {
		time.Sleep(n.delay)
	}
	q.resp = n.appendResponse(q.resp[:0], q)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("Content-Length", strconv.Itoa(len(q.resp)))
	_, _ = w.Write(q.resp)
}

func readBody(dst []byte, r *http.Request) ([]byte, error) {
	if r.ContentLength > 0 && int64(cap(dst)) < r.ContentLength {
		dst = make([]byte, 0, r.ContentLength)
	}
	buf := bytes.NewBuffer(dst)
	_, err := io.Copy(buf, r.Body)
	return buf.Bytes(), err
}

func (n *null) check(q *request) (code, msg string) {
	if (q.name != "" && q.name != n.stream) || (q.arn != "" && q.arn != n.arn) || (q.name == "" && q.arn == "") {
		return "ResourceNotFoundException", fmt.Sprintf("Stream %s%s under account 000000000000 not found.", q.name, q.arn)
	}
	if len(q.entries) == 0 || len(q.entries) > maxRecords {
		return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records' failed to satisfy constraint: Member must have length between 1 and %d (got %d)", maxRecords, len(q.entries))
	}
	total := 0
	for i := range q.entries {
		e := &q.entries[i]
		if k := utf8.RuneCount(e.pk); k < 1 || k > maxKeyChars {
			return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records.%d.member.partitionKey' failed to satisfy constraint: Member must have length between 1 and %d", i+1, maxKeyChars)
		}
		size := len(e.data) + len(e.pk)
		if size > n.lim.maxRecordBytes {
			return "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'records.%d.member.data' failed to satisfy constraint: record of %d bytes exceeds %d", i+1, size, n.lim.maxRecordBytes)
		}
		if e.hasEHK {
			if _, err := hashkey.Parse(string(e.ehk)); err != nil {
				return "InvalidArgumentException", "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was " + string(e.ehk)
			}
		}
		total += size
	}
	if total > n.lim.maxRequestBytes {
		return "InvalidArgumentException", fmt.Sprintf("Records size exceeds %d bytes limit (got %d)", n.lim.maxRequestBytes, total)
	}
	return "", ""
}

var envelopePrefix = []byte(`{"specversion":"1.0","id":"`)

// accept routes every entry and counts its user records.
func (n *null) accept(q *request, received time.Time) {
	var users, userBytes, aggs, decodeErrs, bad int64
	q.hashes = q.hashes[:0]
	q.order = q.order[:0]
	user := func(data []byte) {
		users++
		userBytes += int64(len(data))
		rest, ok := bytes.CutPrefix(data, envelopePrefix)
		end := bytes.IndexByte(rest, '"')
		if !ok || end <= 0 {
			bad++
			return
		}
		q.hashes = append(q.hashes, maphash.Bytes(n.seed, rest[:end]))
		if n.last != nil {
			q.order = append(q.order, orderOf(n.seed, data))
		}
		if n.lat != nil {
			n.lat.add(received, data)
		}
	}
	for i := range q.entries {
		e := &q.entries[i]
		var h hashkey.Key
		if e.hasEHK {
			h, _ = hashkey.Parse(string(e.ehk))
		} else {
			h = hashkey.OfBytes(e.pk)
		}
		s := n.m.route(h)
		s.bytes.Add(int64(len(e.data) + len(e.pk)))
		e.shard = s.id
		e.seq = n.seq.Add(1)
		if kpl.IsAggregated(e.data) || kpl.IsCompressed(e.data) {
			var err error
			q.users, err = q.rd.AppendDecode(q.users[:0], e.data)
			if err != nil {
				decodeErrs++
				continue
			}
			aggs++
			for _, u := range q.users {
				user(u.Data)
			}
			continue
		}
		user(e.data)
	}
	var violations int64
	n.mu.Lock()
	before := len(n.ids)
	for i, h := range q.hashes {
		if n.last == nil {
			n.ids[h] = struct{}{}
			continue
		}
		if _, dup := n.ids[h]; dup {
			continue
		}
		n.ids[h] = struct{}{}
		o := q.order[i]
		c := n.perKey[o.key] + 1
		n.perKey[o.key] = c
		n.topKey = max(n.topKey, c)
		if last, ok := n.last[o.key]; ok && o.seq < last {
			violations++
			continue
		}
		n.last[o.key] = o.seq
	}
	unique := len(n.ids) - before
	top := n.topKey
	n.mu.Unlock()
	n.c[cOrderViolations].Add(violations)
	for c := &n.c[cTopKeyRecords]; ; {
		if cur := c.Load(); top <= cur || c.CompareAndSwap(cur, top) {
			break
		}
	}
	n.c[cEntries].Add(int64(len(q.entries)))
	n.c[cAccepted].Add(int64(len(q.entries)))
	n.c[cUserRecords].Add(users)
	n.c[cUserBytes].Add(userBytes)
	n.c[cAggregates].Add(aggs)
	n.c[cDecodeErrors].Add(decodeErrs)
	n.c[cBadEnvelopes].Add(bad)
	n.c[cUnique].Add(int64(unique))
}

// appendResponse writes the success answer: a 56-digit sequence number
// (increasing over the stream) and the shard id of every entry.
func (n *null) appendResponse(b []byte, q *request) []byte {
	b = append(b, `{"FailedRecordCount":0,"Records":[`...)
	for i := range q.entries {
		e := &q.entries[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"SequenceNumber":"49`...)
		var d [54]byte
		v := e.seq
		for j := len(d) - 1; j >= 0; j-- {
			d[j] = byte('0' + v%10)
			v /= 10
		}
		b = append(b, d[:]...)
		b = append(b, `","ShardId":"`...)
		b = append(b, e.shard...)
		b = append(b, `"}`...)
	}
	return append(b, "]}"...)
}

func writeStats(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, code, msg string) {
	status := http.StatusBadRequest
	b, _ := json.Marshal(map[string]string{"__type": code, "message": msg})
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", code)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// orderKey is a user record's partition key (hashed) and sequence.
type orderKey struct {
	key uint64
	seq string
}

var (
	partitionKeyAttr = []byte(`"partitionkey":"`)
	sequenceAttr     = []byte(`"sequence":"`)
)

// orderOf finds the envelope's partitionkey and sequence attributes by a
// byte search (they come before "data"); the key is hashed as written,
// escapes included.
func orderOf(seed maphash.Seed, envelope []byte) orderKey {
	var o orderKey
	if i := bytes.Index(envelope, partitionKeyAttr); i >= 0 {
		rest := envelope[i+len(partitionKeyAttr):]
		end := 0
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		o.key = maphash.Bytes(seed, rest[:min(end, len(rest))])
	}
	if i := bytes.Index(envelope, sequenceAttr); i >= 0 {
		rest := envelope[i+len(sequenceAttr):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			o.seq = string(rest[:j])
		}
	}
	return o
}
