// Command benchnull is the null Kinesis endpoint `make bench` writes to, in
// a process of its own so that its CPU time is not the bridge's. On a
// 2-core machine the endpoint shares the cores with the bridge and
// PostgreSQL, so its PutRecords path is lean: the request is scanned
// without reflection into reused buffers. It still does everything that
// makes the count honest:
//
//   - AWS's PutRecords limits are enforced (500 records, 5 MiB, 1 MiB per
//     record, partition keys of 1 to 256 characters); a request over them
//     is rejected as Kinesis would;
//   - every record's data is base64-decoded, and KPL aggregates are
//     de-aggregated (their MD5 digest checked) with sink/kinesis/kpl;
//   - every user record must be a cdcbridge envelope: it starts with
//     {"specversion":"1.0","id":"...", and its id is remembered, so that
//     the count of distinct ids (Unique) is what a consumer dropping
//     duplicates would see;
//   - every record is routed to the shard owning its hash key (the MD5 of
//     its partition key, or its explicit hash key), and answered with that
//     shard's id and a sequence number increasing over the stream.
//
// Every other operation (DescribeStreamSummary, ListShards) is answered by
// the kinesisfake null server, whose shard map the PutRecords path uses.
//
// With -latency it also takes, for every user record, the time since the
// commit timestamp in the envelope's "time" attribute. The clock is read
// when the request has been read, so the figure slightly overstates
// commit-to-received time.
//
//	benchnull -shards 512 -stream bench [-latency]
//
// It prints one JSON line, {"url": ..., "stats": ...}: the Kinesis
// endpoint (GET /_fake/counts there returns the counts) and a second
// address whose /latency returns the latency summary (?reset=1 starts a
// new window).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cdcbridge/cdcbridge/internal/kinesisfake"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "benchnull:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	stream := flag.String("stream", "bench", "stream name")
	shards := flag.Int("shards", 512, "open shards")
	latency := flag.Bool("latency", false, "record commit-to-accepted latency of every user record")
	flag.Parse()

	// The fake listens on a loopback port of its own that nobody uses:
	// requests reach it through its handler.
	fake := kinesisfake.New(kinesisfake.Options{StreamName: *stream, Shards: *shards})
	defer fake.Close()
	m, err := loadShardMap(fake, *stream)
	if err != nil {
		return err
	}
	n := newNull(*stream, m, fake)
	if *latency {
		n.lat = &latencies{}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: n}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()

	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /latency", func(w http.ResponseWriter, r *http.Request) {
		var sum Summary
		if n.lat != nil {
			sum = n.lat.summary(r.URL.Query().Get("reset") == "1")
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(sum)
	})
	ssrv := &http.Server{Handler: mux}
	go func() { _ = ssrv.Serve(sl) }()
	defer ssrv.Close()

	line, _ := json.Marshal(map[string]string{"url": "http://" + l.Addr().String(), "stats": "http://" + sl.Addr().String()})
	fmt.Println(string(line))
	<-ctx.Done()
	b, _ := json.Marshal(n.counts())
	fmt.Println(string(b))
	return nil
}

// loadShardMap asks the fake for its shards.
func loadShardMap(fake http.Handler, stream string) (*shardMap, error) {
	in, _ := json.Marshal(map[string]any{"StreamName": stream, "MaxResults": 10000})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(in)))
	req.Header.Set("X-Amz-Target", "Kinesis_20131202.ListShards")
	fake.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("ListShards: HTTP %d: %s", rec.Code, rec.Body)
	}
	var out struct {
		Shards []struct {
			ShardId      string
			HashKeyRange struct{ StartingHashKey, EndingHashKey string }
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("ListShards: %w", err)
	}
	m := &shardMap{}
	for _, s := range out.Shards {
		lo, ok1 := parseHashKey(s.HashKeyRange.StartingHashKey)
		hi, ok2 := parseHashKey(s.HashKeyRange.EndingHashKey)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("ListShards: bad hash key range of %s", s.ShardId)
		}
		m.add(s.ShardId, lo, hi)
	}
	if len(m.shards) == 0 {
		return nil, fmt.Errorf("ListShards: no shards")
	}
	return m, nil
}
