package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// streamMux serves the DynamoDB Streams API for one stream made of the
// streams of several DynamoDB Local tables (DynamoDB Local gives each
// table's stream a single shard): its shards are theirs, reading them goes
// to DynamoDB Local. Each bridge process gets its own listener, so the mux
// knows who read which shard when.
type streamMux struct {
	t        *testing.T
	upstream string   // DynamoDB Local
	arns     []string // the tables' stream ARNs; the first names the stream
	client   *http.Client

	mu    sync.Mutex
	shard map[string]string // shard id -> its table's stream ARN
	iters map[string]string // iterator -> shard id
	reads []muxRead
}

type muxRead struct {
	inst, shard string
	at          time.Time
}

func newStreamMux(t *testing.T, upstream string, arns []string) *streamMux {
	return &streamMux{t: t, upstream: upstream, arns: arns, client: &http.Client{},
		shard: map[string]string{}, iters: map[string]string{}}
}

// listen returns the endpoint of a listener for process inst.
func (m *streamMux) listen(inst string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(inst, w, r) }))
	m.t.Cleanup(srv.Close)
	return srv.URL
}

func (m *streamMux) serve(inst string, w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	_, op, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch op {
	case "DescribeStream":
		m.describe(w, r, in)
	case "GetShardIterator":
		id, _ := in["ShardId"].(string)
		m.mu.Lock()
		arn := m.shard[id]
		m.mu.Unlock()
		if arn != "" {
			in["StreamArn"] = arn
		}
		status, out := m.forward(r, in)
		var it struct{ ShardIterator string }
		if json.Unmarshal(out, &it) == nil && it.ShardIterator != "" {
			m.mu.Lock()
			m.iters[it.ShardIterator] = id
			m.mu.Unlock()
		}
		muxWrite(w, status, out)
	case "GetRecords":
		it, _ := in["ShardIterator"].(string)
		m.mu.Lock()
		id := m.iters[it]
		m.reads = append(m.reads, muxRead{inst: inst, shard: id, at: time.Now()})
		m.mu.Unlock()
		status, out := m.forward(r, in)
		var next struct{ NextShardIterator string }
		if json.Unmarshal(out, &next) == nil && next.NextShardIterator != "" {
			m.mu.Lock()
			m.iters[next.NextShardIterator] = id
			m.mu.Unlock()
		}
		muxWrite(w, status, out)
	default:
		status, out := m.forward(r, in)
		muxWrite(w, status, out)
	}
}

// describe merges the tables' streams into one. A child-shard filter
// finds nothing: the tables' shards never split here.
func (m *streamMux) describe(w http.ResponseWriter, r *http.Request, in map[string]any) {
	_, filtered := in["ShardFilter"]
	var base map[string]any
	var shards []any
	for i, arn := range m.arns {
		status, out := m.forward(r, map[string]any{"StreamArn": arn})
		if status != http.StatusOK {
			muxWrite(w, status, out)
			return
		}
		var resp map[string]any
		if err := json.Unmarshal(out, &resp); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		desc, _ := resp["StreamDescription"].(map[string]any)
		list, _ := desc["Shards"].([]any)
		m.mu.Lock()
		for _, s := range list {
			if id, _ := s.(map[string]any)["ShardId"].(string); id != "" {
				m.shard[id] = arn
			}
		}
		m.mu.Unlock()
		shards = append(shards, list...)
		if i == 0 {
			base = resp
		}
		if filtered {
			break
		}
	}
	desc := base["StreamDescription"].(map[string]any)
	delete(desc, "LastEvaluatedShardId")
	desc["Shards"] = shards
	if filtered {
		desc["Shards"] = []any{}
	}
	out, _ := json.Marshal(base)
	muxWrite(w, http.StatusOK, out)
}

// forward sends an operation to DynamoDB Local (which does not check
// request signatures) and returns its answer.
func (m *streamMux) forward(r *http.Request, in map[string]any) (int, []byte) {
	body, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, m.upstream+"/", bytes.NewReader(body))
	if err != nil {
		return http.StatusBadGateway, []byte(err.Error())
	}
	for _, h := range []string{"X-Amz-Target", "Content-Type", "Authorization", "X-Amz-Date"} {
		req.Header.Set(h, r.Header.Get(h))
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return http.StatusBadGateway, []byte(fmt.Sprintf(`{"__type":"InternalServerError","message":%q}`, err.Error()))
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func muxWrite(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	w.Write(body)
}

// readIntervals returns, per shard and process, the intervals in which the
// process read the shard: its GetRecords calls, split at pauses longer
// than gap.
func (m *streamMux) readIntervals(gap time.Duration) map[string]map[string][][2]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]map[string][][2]time.Time{}
	for _, rd := range m.reads {
		if rd.shard == "" {
			continue
		}
		if out[rd.shard] == nil {
			out[rd.shard] = map[string][][2]time.Time{}
		}
		iv := out[rd.shard][rd.inst]
		if n := len(iv); n > 0 && rd.at.Sub(iv[n-1][1]) <= gap {
			iv[n-1][1] = rd.at
		} else {
			iv = append(iv, [2]time.Time{rd.at, rd.at})
		}
		out[rd.shard][rd.inst] = iv
	}
	return out
}

// maxOverlap returns the longest time any shard was read by two processes
// at once, and which.
func maxOverlap(ivs map[string]map[string][][2]time.Time) (time.Duration, string) {
	var worst time.Duration
	var what string
	for shard, byInst := range ivs {
		for a, ia := range byInst {
			for b, ib := range byInst {
				if a >= b {
					continue
				}
				for _, x := range ia {
					for _, y := range ib {
						from, to := x[0], x[1]
						if y[0].After(from) {
							from = y[0]
						}
						if y[1].Before(to) {
							to = y[1]
						}
						if d := to.Sub(from); d > worst {
							worst, what = d, fmt.Sprintf("shard %s by %s and %s from %s", shard, a, b, from.Format("15:04:05.000"))
						}
					}
				}
			}
		}
	}
	return worst, what
}
