package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cdcbridge/cdcbridge/kpl"
	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
)

func newTestNull(t *testing.T, latency bool) *httptest.Server {
	t.Helper()
	fake := kinesisfake.New(kinesisfake.Options{StreamName: "s", Shards: 4})
	t.Cleanup(fake.Close)
	m, err := loadShardMap(fake, "s")
	if err != nil {
		t.Fatal(err)
	}
	n := newNull("s", m, fake, limits{maxRequestBytes: 5 << 20, maxRecordBytes: 1 << 20})
	if latency {
		n.lat = &latencies{}
	}
	srv := httptest.NewServer(n)
	t.Cleanup(srv.Close)
	return srv
}

func envelope(id string) string {
	return `{"specversion":"1.0","id":"` + id + `","time":"2026-01-01T00:00:00Z","data":{}}`
}

func put(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("X-Amz-Target", "Kinesis_20131202.PutRecords")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, resp.Header.Get("X-Amzn-Errortype"))
	var out struct {
		FailedRecordCount int
		Records           []struct{ ShardId, SequenceNumber string }
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		for _, r := range out.Records {
			if !strings.HasPrefix(r.ShardId, "shardId-") || len(r.SequenceNumber) != 56 {
				t.Fatalf("answer entry %+v", r)
			}
		}
	}
	return resp.StatusCode, b.String()
}

func getJSON[T any](t *testing.T, url string) T {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func counts(t *testing.T, url string) Counts { return getJSON[Counts](t, url+"/_fake/counts") }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestPutRecordsCounts(t *testing.T) {
	srv := newTestNull(t, false)
	var agg kpl.Aggregator
	agg.Add("k2", []byte(envelope("b")))
	agg.Add("k3", []byte(envelope("c")))
	aggregate := agg.Bytes(nil)
	// Escaped partition key, keys in another order, an aggregate with an
	// explicit hash key, and a duplicate id.
	body := `{"StreamName":"s","Records":[` +
		`{"PartitionKey":"t:[\"x\"]","Data":"` + b64(envelope("a")) + `"},` +
		`{"Data":"` + base64.StdEncoding.EncodeToString(aggregate) + `","PartitionKey":"a","ExplicitHashKey":"340282366920938463463374607431768211455"},` +
		`{"Data":"` + b64(envelope("a")) + `","PartitionKey":"k"}]}`
	if code, errType := put(t, srv.URL, body); code != http.StatusOK {
		t.Fatalf("HTTP %d %s", code, errType)
	}
	got := counts(t, srv.URL)
	want := Counts{Requests: 1, PutRequests: 1, Entries: 3, Accepted: 3, UserRecords: 4, Aggregates: 1, Unique: 3}
	got.UserBytes = 0
	got.TopShardBytes = 0 // TestCompressedAndShardBytes
	if got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
}

// TestCompressedAndShardBytes: a gzipped aggregate is inflated and
// counted like a plain one, and a shard's bytes are what it took as sent.
func TestCompressedAndShardBytes(t *testing.T) {
	srv := newTestNull(t, false)
	var (
		agg kpl.Aggregator
		z   kpl.Compressor
	)
	agg.Add("k2", []byte(envelope("b")))
	agg.Add("k3", []byte(envelope("c")))
	zipped := z.Append(nil, agg.Bytes(nil))
	const last = "340282366920938463463374607431768211455" // both to the last shard
	body := `{"StreamName":"s","Records":[` +
		`{"Data":"` + base64.StdEncoding.EncodeToString(zipped) + `","PartitionKey":"a","ExplicitHashKey":"` + last + `"},` +
		`{"Data":"` + b64(envelope("a")) + `","PartitionKey":"k","ExplicitHashKey":"` + last + `"}]}`
	if code, errType := put(t, srv.URL, body); code != http.StatusOK {
		t.Fatalf("HTTP %d %s", code, errType)
	}
	got := counts(t, srv.URL)
	want := Counts{Requests: 1, PutRequests: 1, Entries: 2, Accepted: 2, UserRecords: 3, Aggregates: 1, Unique: 3,
		UserBytes: int64(3 * len(envelope("a"))), TopShardBytes: int64(len(zipped) + len("a") + len(envelope("a")) + len("k"))}
	if got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
}

func TestPutRecordsRejects(t *testing.T) {
	srv := newTestNull(t, false)
	long := strings.Repeat("x", 257)
	for name, body := range map[string]string{
		"stream":     `{"StreamName":"other","Records":[{"Data":"` + b64(envelope("a")) + `","PartitionKey":"k"}]}`,
		"key":        `{"StreamName":"s","Records":[{"Data":"` + b64(envelope("a")) + `","PartitionKey":"` + long + `"}]}`,
		"base64":     `{"StreamName":"s","Records":[{"Data":"!!!","PartitionKey":"k"}]}`,
		"json":       `{"StreamName":"s","Records":[{"Data":"` + b64(envelope("a")) + `","PartitionKey":"k"}`,
		"no records": `{"StreamName":"s","Records":[]}`,
		"record":     `{"StreamName":"s","Records":[{"Data":"` + b64(strings.Repeat("x", 1<<20)) + `","PartitionKey":"k"}]}`,
	} {
		if code, _ := put(t, srv.URL, body); code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", name, code)
		}
	}
	if c := counts(t, srv.URL); c.Rejected != 6 || c.UserRecords != 0 {
		t.Fatalf("counts %+v", c)
	}
	// Not an envelope: accepted (Kinesis takes any bytes), counted as bad.
	put(t, srv.URL, `{"StreamName":"s","Records":[{"Data":"`+b64("hello")+`","PartitionKey":"k"}]}`)
	if c := counts(t, srv.URL); c.BadEnvelopes != 1 || c.Unique != 0 {
		t.Fatalf("counts %+v", c)
	}
}

func TestLatency(t *testing.T) {
	srv := newTestNull(t, true)
	body := `{"StreamName":"s","Records":[` +
		`{"Data":"` + b64(envelope("a")) + `","PartitionKey":"k"},` +
		`{"Data":"` + b64(`{"specversion":"1.0","id":"b","data":{}}`) + `","PartitionKey":"k"},` +
		`{"Data":"` + b64(`{"specversion":"1.0","id":"c","type":"io.cdcbridge.read","time":"2020-01-01T00:00:00Z","data":{}}`) + `","PartitionKey":"k"}]}`
	if code, errType := put(t, srv.URL, body); code != http.StatusOK {
		t.Fatalf("HTTP %d %s", code, errType)
	}
	if s := getJSON[Summary](t, srv.URL+"/_fake/latency?reset=1"); s.N != 1 || s.Bad != 1 || s.Reads != 1 || s.P50 <= 0 {
		t.Fatalf("latency %+v, want one sample (the envelope's time is in the past), one without a time and one read left out", s)
	}
	if s := getJSON[Summary](t, srv.URL+"/_fake/latency"); s.N != 0 || s.Bad != 0 || s.Reads != 0 {
		t.Fatalf("latency after reset %+v, want an empty window", s)
	}
}

// With -check-order, a row's change seen for the first time with a
// sequence below one seen before for its key is a violation; a duplicate
// of an earlier change is not, and other keys are apart.
func TestCheckOrder(t *testing.T) {
	fake := kinesisfake.New(kinesisfake.Options{StreamName: "s", Shards: 4})
	t.Cleanup(fake.Close)
	m, err := loadShardMap(fake, "s")
	if err != nil {
		t.Fatal(err)
	}
	n := newNull("s", m, fake, limits{maxRequestBytes: 5 << 20, maxRecordBytes: 1 << 20})
	n.last, n.perKey = map[uint64]string{}, map[uint64]int64{}
	srv := httptest.NewServer(n)
	t.Cleanup(srv.Close)
	env := func(id, pk, seq string) string {
		return `{"specversion":"1.0","id":"` + id + `","partitionkey":"` + pk + `","sequence":"` + seq + `","data":{}}`
	}
	var agg kpl.Aggregator
	agg.Add("p", []byte(env("a2", `t:[\"x\"]`, "02")))
	agg.Add("p", []byte(env("a3", `t:[\"x\"]`, "03")))
	for i, body := range []string{
		`{"StreamName":"s","Records":[{"Data":"` + b64(env("a1", `t:[\"x\"]`, "01")) + `","PartitionKey":"p"},{"Data":"` + b64(env("b5", "t:[2]", "05")) + `","PartitionKey":"q"}]}`,
		`{"StreamName":"s","Records":[{"Data":"` + base64.StdEncoding.EncodeToString(agg.Bytes(nil)) + `","PartitionKey":"p"}]}`,
		// a1 again (a duplicate), then b4 after b5: one violation.
		`{"StreamName":"s","Records":[{"Data":"` + b64(env("a1", `t:[\"x\"]`, "01")) + `","PartitionKey":"p"},{"Data":"` + b64(env("b4", "t:[2]", "04")) + `","PartitionKey":"q"}]}`,
	} {
		if code, errType := put(t, srv.URL, body); code != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, code, errType)
		}
	}
	if c := counts(t, srv.URL); c.OrderViolations != 1 || c.Unique != 5 || c.UserRecords != 6 || c.TopKeyRecords != 3 {
		t.Fatalf("counts %+v; want 1 order violation, 5 unique of 6 user records, 3 of the top key", c)
	}
}
