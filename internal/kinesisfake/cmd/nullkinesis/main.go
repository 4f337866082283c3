// Command nullkinesis serves a null Kinesis endpoint (see package
// kinesisfake): it accepts PutRecords, decodes and counts what it is sent
// and answers success. Benchmarks run it in its own process so that its CPU
// time is not counted as the producer's.
//
//	nullkinesis -addr 127.0.0.1:4567 -shards 64 -stream bench
//
// It prints its URL on the first line of standard output, its counts as
// JSON every -every interval and on exit (SIGINT, SIGTERM); GET
// /_fake/counts returns them too.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cdcbridge/cdcbridge/internal/kinesisfake"
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
	maxKiB := flag.Int("max-record-kib", 0, "MaxRecordSizeInKiB to report (0: absent, meaning 1024)")
	maxRequest := flag.Int("max-request-bytes", 5<<20, "PutRecords request limit (data plus partition keys)")
	every := flag.Duration("every", 0, "print counts at this interval (0: only on exit)")
	flag.Parse()

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	s := kinesisfake.New(kinesisfake.Options{
		StreamName: *stream,
		Shards:     *shards,
		OnDemand:   *onDemand,
		Limits:     kinesisfake.Limits{MaxRequestBytes: *maxRequest},
		Listener:   l,
	})
	defer s.Close()
	if *maxKiB > 0 {
		kib := int32(*maxKiB)
		s.SetOverrides(kinesisfake.Overrides{MaxRecordSizeInKiB: &kib})
	}
	fmt.Println(s.URL)

	print := func() {
		b, _ := json.Marshal(s.Counts())
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
