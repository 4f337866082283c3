package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// StreamsProxy stands in front of DynamoDB Local's Streams endpoint and
// adds what it does not do on demand: expired iterators, throttling, and a
// shard split.
//
// SetRefused answers every call as AWS answers a request whose
// credentials it does not accept (DynamoDB Local accepts any).
//
// DynamoDB Local keeps one shard per stream. Split ends that shard at its
// current last record and makes two children continue it: the parent's
// reads stop there (NextShardIterator absent: the shard is closed), and
// each child returns the later records of half of the keys (by a hash of
// the key), as a real split hands each child part of the key space. Every
// record stays in exactly one shard of the lineage, so a reader that
// drains the parent before the children, as DynamoDB requires, sees every
// item's changes in order.
type StreamsProxy struct {
	URL      string
	upstream string
	srv      *httptest.Server
	client   *http.Client

	// gate keeps Split from cutting the parent while a read of it is in
	// flight: such a read could return records past the split point, which
	// the children would then serve again under their own shard ids.
	gate         sync.RWMutex
	mu           sync.Mutex
	rng          *rand.Rand
	expireRate   float64
	throttleRate float64
	split        *splitState
	iters        map[string]childIter
	nextIter     int

	refused atomic.Bool

	Expired, Throttled, ChildReads atomic.Int64
}

type splitState struct {
	parent   string
	end      *big.Int // the parent's last sequence number
	endText  string
	children [2]string
}

type childIter struct {
	shard string
	child int    // index in children; -1: the exhausted parent
	real  string // the upstream iterator
}

const streamsPrefix = "DynamoDBStreams_20120810."

// NewStreamsProxy starts a proxy to upstream (DynamoDB Local's endpoint).
func NewStreamsProxy(upstream string, rng *rand.Rand) *StreamsProxy {
	p := &StreamsProxy{upstream: strings.TrimRight(upstream, "/"), rng: rng, iters: map[string]childIter{},
		client: &http.Client{Timeout: 30 * time.Second}}
	p.srv = httptest.NewServer(p)
	p.URL = p.srv.URL
	return p
}

// Close stops the proxy.
func (p *StreamsProxy) Close() { p.srv.CloseClientConnections(); p.srv.Close() }

// SetFaults sets the chance that a GetRecords call is answered
// ExpiredIteratorException, and that a call is throttled.
func (p *StreamsProxy) SetFaults(expire, throttle float64) {
	p.mu.Lock()
	p.expireRate, p.throttleRate = expire, throttle
	p.mu.Unlock()
}

func (p *StreamsProxy) chance(rate float64) bool {
	return rate > 0 && p.rng.Float64() < rate
}

// SetRefused starts (true) or ends (false) refusing every call with
// UnrecognizedClientException.
func (p *StreamsProxy) SetRefused(refused bool) { p.refused.Store(refused) }

// Split splits the stream's only open shard. It returns the parent's id
// and the sequence number it ends at.
func (p *StreamsProxy) Split(ctx context.Context, streamARN string) (string, string, error) {
	var desc struct {
		StreamDescription struct {
			Shards []struct {
				ShardId             string
				SequenceNumberRange struct{ StartingSequenceNumber, EndingSequenceNumber string }
			}
		}
	}
	if err := p.call(ctx, "DescribeStream", map[string]any{"StreamArn": streamARN}, &desc); err != nil {
		return "", "", err
	}
	var open []string
	for _, s := range desc.StreamDescription.Shards {
		if s.SequenceNumberRange.EndingSequenceNumber == "" {
			open = append(open, s.ShardId)
		}
	}
	if len(open) != 1 {
		return "", "", fmt.Errorf("streams proxy: split needs exactly one open shard, found %v", open)
	}
	parent := open[0]
	// The parent ends at the last record written so far, which no read in
	// flight may pass.
	p.gate.Lock()
	defer p.gate.Unlock()
	var it struct{ ShardIterator string }
	if err := p.call(ctx, "GetShardIterator", map[string]any{"StreamArn": streamARN, "ShardId": parent, "ShardIteratorType": "TRIM_HORIZON"}, &it); err != nil {
		return "", "", err
	}
	last := ""
	for iter := it.ShardIterator; iter != ""; {
		var page struct {
			Records []struct {
				Dynamodb struct{ SequenceNumber string } `json:"dynamodb"`
			}
			NextShardIterator string
		}
		if err := p.call(ctx, "GetRecords", map[string]any{"ShardIterator": iter, "Limit": 1000}, &page); err != nil {
			return "", "", err
		}
		if len(page.Records) == 0 {
			break
		}
		last = page.Records[len(page.Records)-1].Dynamodb.SequenceNumber
		iter = page.NextShardIterator
	}
	if last == "" {
		return "", "", fmt.Errorf("streams proxy: shard %s holds no records to split after", parent)
	}
	end, _ := new(big.Int).SetString(last, 10)
	p.mu.Lock()
	p.split = &splitState{parent: parent, end: end, endText: last, children: [2]string{parent + "-a", parent + "-b"}}
	p.mu.Unlock()
	return parent, last, nil
}

// call sends one request upstream, unchanged by faults or the split.
func (p *StreamsProxy) call(ctx context.Context, op string, in, out any) error {
	body, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.upstream+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Amz-Target", streamsPrefix+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("streams proxy: %s: %d %s", op, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

func (p *StreamsProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if p.refused.Load() {
		writeDDBError(w, "UnrecognizedClientException", "The security token included in the request is invalid. (injected)")
		return
	}
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), streamsPrefix)
	if op == "GetRecords" {
		p.gate.RLock()
		defer p.gate.RUnlock()
	}
	p.mu.Lock()
	split := p.split
	var fault string
	switch {
	case op == "GetRecords" && p.chance(p.expireRate):
		fault = "ExpiredIteratorException"
	case (op == "GetRecords" || op == "GetShardIterator" || op == "DescribeStream") && p.chance(p.throttleRate):
		fault = []string{"LimitExceededException", "ThrottlingException"}[p.rng.IntN(2)]
	}
	p.mu.Unlock()
	switch fault {
	case "ExpiredIteratorException":
		p.Expired.Add(1)
		writeDDBError(w, fault, "Iterator expired. The iterator was created at time "+time.Now().Add(-16*time.Minute).Format(time.RFC1123)+" (injected)")
		return
	case "":
	default:
		p.Throttled.Add(1)
		writeDDBError(w, fault, "Rate exceeded for shard (injected)")
		return
	}
	if split == nil || !strings.HasPrefix(r.Header.Get("X-Amz-Target"), streamsPrefix) {
		p.forward(w, r, body)
		return
	}
	var in map[string]any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&in); err != nil {
		p.forward(w, r, body)
		return
	}
	switch op {
	case "DescribeStream":
		p.describeStream(w, r, body, in, split)
	case "GetShardIterator":
		p.getShardIterator(w, r, in, split)
	case "GetRecords":
		p.getRecords(w, r, in, split)
	default:
		p.forward(w, r, body)
	}
}

func (p *StreamsProxy) describeStream(w http.ResponseWriter, r *http.Request, body []byte, in map[string]any, s *splitState) {
	if f, ok := in["ShardFilter"].(map[string]any); ok {
		if f["Type"] == "CHILD_SHARDS" {
			var shards []any
			if f["ShardId"] == s.parent {
				shards = p.childShards(s)
			}
			writeDDBJSON(w, map[string]any{"StreamDescription": map[string]any{
				"StreamArn": in["StreamArn"], "StreamStatus": "ENABLED", "Shards": shards}})
			return
		}
	}
	status, hdr, respBody, err := p.roundTrip(r, body)
	if err != nil || status != http.StatusOK {
		p.relay(w, status, hdr, respBody, err)
		return
	}
	var out map[string]any
	d := json.NewDecoder(bytes.NewReader(respBody))
	d.UseNumber()
	if err := d.Decode(&out); err != nil {
		p.relay(w, status, hdr, respBody, nil)
		return
	}
	desc, _ := out["StreamDescription"].(map[string]any)
	shards, _ := desc["Shards"].([]any)
	for _, sh := range shards {
		m, _ := sh.(map[string]any)
		if m["ShardId"] == s.parent {
			rng, _ := m["SequenceNumberRange"].(map[string]any)
			if rng != nil {
				rng["EndingSequenceNumber"] = s.endText
			}
		}
	}
	// The children come after the parent, on the last page.
	if desc != nil && desc["LastEvaluatedShardId"] == nil {
		desc["Shards"] = append(shards, p.childShards(s)...)
	}
	writeDDBJSON(w, out)
}

func (p *StreamsProxy) childShards(s *splitState) []any {
	start := new(big.Int).Add(s.end, big.NewInt(1)).String()
	start = strings.Repeat("0", max(0, len(s.endText)-len(start))) + start
	var out []any
	for _, c := range s.children {
		out = append(out, map[string]any{"ShardId": c, "ParentShardId": s.parent,
			"SequenceNumberRange": map[string]any{"StartingSequenceNumber": start}})
	}
	return out
}

func (p *StreamsProxy) newIter(it childIter) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextIter++
	tok := fmt.Sprintf("chaos-iterator-%d", p.nextIter)
	p.iters[tok] = it
	return tok
}

func (p *StreamsProxy) getShardIterator(w http.ResponseWriter, r *http.Request, in map[string]any, s *splitState) {
	shard, _ := in["ShardId"].(string)
	typ, _ := in["ShardIteratorType"].(string)
	seqText, _ := in["SequenceNumber"].(string)
	seq, _ := new(big.Int).SetString(seqText, 10)
	child := -1
	for i, c := range s.children {
		if shard == c {
			child = i
		}
	}
	if child < 0 {
		if shard == s.parent && seq != nil && (seq.Cmp(s.end) > 0 || (typ == "AFTER_SEQUENCE_NUMBER" && seq.Cmp(s.end) == 0)) {
			// Past the parent's end: an exhausted shard.
			writeDDBJSON(w, map[string]any{"ShardIterator": p.newIter(childIter{shard: shard, child: -1})})
			return
		}
		body, _ := json.Marshal(in)
		p.forward(w, r, body)
		return
	}
	// A child continues the parent's real shard after its end.
	up := map[string]any{"StreamArn": in["StreamArn"], "ShardId": s.parent, "ShardIteratorType": typ}
	switch typ {
	case "TRIM_HORIZON":
		up["ShardIteratorType"], up["SequenceNumber"] = "AFTER_SEQUENCE_NUMBER", s.endText
	case "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER":
		if seq == nil || seq.Cmp(s.end) <= 0 {
			up["ShardIteratorType"], up["SequenceNumber"] = "AFTER_SEQUENCE_NUMBER", s.endText
		} else {
			up["SequenceNumber"] = seqText
		}
	}
	var out struct{ ShardIterator string }
	if err := p.call(r.Context(), "GetShardIterator", up, &out); err != nil {
		writeDDBErrorStatus(w, http.StatusInternalServerError, "InternalServerError", err.Error())
		return
	}
	writeDDBJSON(w, map[string]any{"ShardIterator": p.newIter(childIter{shard: shard, child: child, real: out.ShardIterator})})
}

func (p *StreamsProxy) getRecords(w http.ResponseWriter, r *http.Request, in map[string]any, s *splitState) {
	tok, _ := in["ShardIterator"].(string)
	p.mu.Lock()
	it, isChild := p.iters[tok]
	p.mu.Unlock()
	if isChild && it.child < 0 {
		writeDDBJSON(w, map[string]any{"Records": []any{}})
		return
	}
	if isChild {
		in["ShardIterator"] = it.real
		p.ChildReads.Add(1)
	}
	body, _ := json.Marshal(in)
	status, hdr, respBody, err := p.roundTrip(r, body)
	if err != nil || status != http.StatusOK {
		p.relay(w, status, hdr, respBody, err)
		return
	}
	var out map[string]any
	d := json.NewDecoder(bytes.NewReader(respBody))
	d.UseNumber()
	if err := d.Decode(&out); err != nil {
		p.relay(w, status, hdr, respBody, nil)
		return
	}
	recs, _ := out["Records"].([]any)
	kept := []any{}
	closed := false
	for _, rec := range recs {
		m, _ := rec.(map[string]any)
		dd, _ := m["dynamodb"].(map[string]any)
		seqText, _ := dd["SequenceNumber"].(string)
		seq, _ := new(big.Int).SetString(seqText, 10)
		after := seq != nil && seq.Cmp(s.end) > 0
		switch {
		case !isChild && after:
			closed = true // the parent's reads end at its last record
		case !isChild:
			kept = append(kept, rec)
			if seq != nil && seq.Cmp(s.end) == 0 {
				closed = true
			}
		case after && childOf(dd) == it.child:
			kept = append(kept, rec)
		}
	}
	out["Records"] = kept
	switch {
	case !isChild && closed:
		delete(out, "NextShardIterator")
	case isChild:
		if next, ok := out["NextShardIterator"].(string); ok && next != "" {
			out["NextShardIterator"] = p.newIter(childIter{shard: it.shard, child: it.child, real: next})
		}
	}
	writeDDBJSON(w, out)
}

// childOf picks the child of a record by a hash of its key.
func childOf(dd map[string]any) int {
	keys, _ := json.Marshal(dd["Keys"])
	h := fnv.New32a()
	h.Write(keys)
	return int(h.Sum32() % 2)
}

func (p *StreamsProxy) roundTrip(r *http.Request, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, p.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Accept-Encoding", "Connection":
			continue
		}
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

func (p *StreamsProxy) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	status, hdr, respBody, err := p.roundTrip(r, body)
	p.relay(w, status, hdr, respBody, err)
}

func (p *StreamsProxy) relay(w http.ResponseWriter, status int, hdr http.Header, body []byte, err error) {
	if err != nil {
		writeDDBErrorStatus(w, http.StatusInternalServerError, "InternalServerError", "upstream: "+err.Error())
		return
	}
	for k, v := range hdr {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Connection", "Transfer-Encoding":
			continue
		}
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeDDBJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	_, _ = w.Write(b)
}

func writeDDBError(w http.ResponseWriter, code, msg string) {
	writeDDBErrorStatus(w, http.StatusBadRequest, code, msg)
}

func writeDDBErrorStatus(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(map[string]string{"__type": "com.amazonaws.dynamodb.v20120810#" + code, "message": msg})
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
