// Command nullkinesis is the null Kinesis endpoint that benchmarks write to
// (the producer's in sink/kinesis, `make bench`), in a process of its own so
// that its CPU time is not the producer's. On a 2-core machine the endpoint
// shares the cores with the bridge and PostgreSQL, so its PutRecords path
// is lean: the request is scanned without reflection into reused buffers.
// It still does everything that makes the count honest:
//
//   - AWS's PutRecords limits are enforced (500 records, -max-request-bytes,
//     the record size of -max-record-kib, partition keys of 1 to 256
//     characters); a request over them is rejected as Kinesis would;
//   - every record's data is base64-decoded, and KPL aggregates are
//     de-aggregated (their MD5 digest checked) with kpl;
//   - every user record must be a cdcbridge envelope: it starts with
//     {"specversion":"1.0","id":"...", and its id is remembered, so that
//     the count of distinct ids (Unique) is what a consumer dropping
//     duplicates would see;
//   - every record is routed to the shard owning its hash key (the MD5 of
//     its partition key, or its explicit hash key), and answered with that
//     shard's id and a sequence number increasing over the stream.
//
// Every other operation (DescribeStreamSummary, ListShards) is answered by
// a kinesisfake null-mode server, whose shard map the PutRecords path uses.
//
// With -latency it also takes, for every user record, the time since the
// commit timestamp in the envelope's "time" attribute. The clock is read
// when the request has been read, so the figure slightly overstates
// commit-to-received time.
//
//	nullkinesis -addr 127.0.0.1:4567 -shards 512 -stream bench [-latency]
//
// It prints its URL on the first line of standard output, its counts as
// JSON every -every interval and on exit (SIGINT, SIGTERM). On the same
// address, GET /_fake/counts returns the counts and GET /_fake/latency the
// latency summary (?reset=1 starts a new window).
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
	"time"

	"github.com/cdcbridge/cdcbridge/hashkey"
	"github.com/cdcbridge/cdcbridge/test/kinesisfake"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "nullkinesis:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	stream := flag.String("stream", "null", "stream name")
	shards := flag.Int("shards", 4, "open shards")
	onDemand := flag.Bool("on-demand", false, "report ON_DEMAND capacity mode")
	maxKiB := flag.Int("max-record-kib", 0, "MaxRecordSizeInKiB to report and enforce (0: absent, meaning 1024)")
	maxRequest := flag.Int("max-request-bytes", 5<<20, "PutRecords request limit (data plus partition keys)")
	latency := flag.Bool("latency", false, "record commit-to-accepted latency of every user record")
	every := flag.Duration("every", 0, "print counts at this interval (0: only on exit)")
	delay := flag.Duration("delay", 0, "added to every PutRecords round trip (a remote endpoint's latency)")
	checkOrder := flag.Bool("check-order", false, "count per-row order violations: a user record seen for the first time whose sequence is below its partition key's last")
	flag.Parse()

	// The fake listens on a loopback port of its own that nobody uses:
	// requests reach it through its handler.
	fake := kinesisfake.New(kinesisfake.Options{StreamName: *stream, Shards: *shards, OnDemand: *onDemand})
	defer fake.Close()
	lim := limits{maxRequestBytes: *maxRequest, maxRecordBytes: 1 << 20}
	if *maxKiB > 0 {
		kib := int32(*maxKiB)
		fake.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
		lim.maxRecordBytes = *maxKiB << 10
	}
	m, err := loadShardMap(fake, *stream)
	if err != nil {
		return err
	}
	n := newNull(*stream, m, fake, lim)
	if *latency {
		n.lat = &latencies{}
	}
	n.delay = *delay
	if *checkOrder {
		n.last, n.perKey = map[uint64]string{}, map[uint64]int64{}
	}

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: n}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	fmt.Println("http://" + l.Addr().String())

	print := func() {
		b, _ := json.Marshal(n.counts())
		fmt.Println(string(b))
	}
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			print()
			return nil
		case <-tick:
			print()
		}
	}
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
		lo, err1 := hashkey.Parse(s.HashKeyRange.StartingHashKey)
		hi, err2 := hashkey.Parse(s.HashKeyRange.EndingHashKey)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("ListShards: bad hash key range of %s", s.ShardId)
		}
		m.add(s.ShardId, lo, hi)
	}
	if len(m.shards) == 0 {
		return nil, fmt.Errorf("ListShards: no shards")
	}
	return m, nil
}
