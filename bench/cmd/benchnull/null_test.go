package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cdcbridge/cdcbridge/internal/kinesisfake"
	"github.com/cdcbridge/cdcbridge/sink/kinesis/kpl"
)

func newTestNull(t *testing.T) *httptest.Server {
	t.Helper()
	fake := kinesisfake.New(kinesisfake.Options{StreamName: "s", Shards: 4})
	t.Cleanup(fake.Close)
	m, err := loadShardMap(fake, "s")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newNull("s", m, fake))
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

func counts(t *testing.T, url string) Counts {
	t.Helper()
	resp, err := http.Get(url + "/_fake/counts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c Counts
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestPutRecordsCounts(t *testing.T) {
	srv := newTestNull(t)
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
	if got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
}

func TestPutRecordsRejects(t *testing.T) {
	srv := newTestNull(t)
	long := strings.Repeat("x", 257)
	for name, body := range map[string]string{
		"stream":     `{"StreamName":"other","Records":[{"Data":"` + b64(envelope("a")) + `","PartitionKey":"k"}]}`,
		"key":        `{"StreamName":"s","Records":[{"Data":"` + b64(envelope("a")) + `","PartitionKey":"` + long + `"}]}`,
		"base64":     `{"StreamName":"s","Records":[{"Data":"!!!","PartitionKey":"k"}]}`,
		"json":       `{"StreamName":"s","Records":[{"Data":"` + b64(envelope("a")) + `","PartitionKey":"k"}`,
		"no records": `{"StreamName":"s","Records":[]}`,
	} {
		if code, _ := put(t, srv.URL, body); code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", name, code)
		}
	}
	if c := counts(t, srv.URL); c.Rejected != 5 || c.UserRecords != 0 {
		t.Fatalf("counts %+v", c)
	}
	// Not an envelope: accepted (Kinesis takes any bytes), counted as bad.
	put(t, srv.URL, `{"StreamName":"s","Records":[{"Data":"`+b64("hello")+`","PartitionKey":"k"}]}`)
	if c := counts(t, srv.URL); c.BadEnvelopes != 1 || c.Unique != 0 {
		t.Fatalf("counts %+v", c)
	}
}

func TestParseHashKey(t *testing.T) {
	for s, ok := range map[string]bool{
		"0": true, "340282366920938463463374607431768211455": true,
		"340282366920938463463374607431768211456": false, "": false, "12a": false,
	} {
		if _, got := parseHashKey(s); got != ok {
			t.Errorf("parseHashKey(%q) ok = %v, want %v", s, got, ok)
		}
	}
	if h, _ := parseHashKey("18446744073709551616"); h != (hashKey{1, 0}) {
		t.Errorf("2^64 parsed as %+v", h)
	}
}
