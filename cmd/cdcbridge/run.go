package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "none"
)

const usage = `cdcbridge captures committed changes from PostgreSQL or DynamoDB Streams
and writes them, in order per row, to an Amazon Kinesis data stream.

Usage:
  cdcbridge [run]      run the daemon (configured by CDCBRIDGE_* variables)
  cdcbridge tail       print what the bridge wrote to the stream (cdcbridge tail -h)
  cdcbridge check      preflight checks of the configuration and its servers
  cdcbridge snapshot   read tables again while streaming, show or cancel snapshots (cdcbridge snapshot -h)
  cdcbridge dlq        list or replay dead-lettered events (cdcbridge dlq -h)
  cdcbridge config     list every variable with its default and meaning
                       (--json: as JSON; --check: validate the environment)
  cdcbridge version    print version, commit and Go version
`

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runDaemon(ctx, stderr)
	case "config":
		return runConfig(args, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "cdcbridge %s (commit %s, %s, %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "tail":
		return runTail(ctx, args, stdout, stderr)
	case "check":
		return runCheck(ctx, args, stdout, stderr)
	case "dlq":
		return runDLQ(ctx, args, stdout, stderr)
	case "snapshot":
		return runSnapshot(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "cdcbridge: unknown command %q\n\n%s", cmd, usage)
		return exitConfig
	}
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runDaemon(ctx context.Context, stderr io.Writer) int {
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	setMemoryLimit(log, cfg.Sink.MaxInFlightBytes)
	if err := daemon(ctx, cfg, log); err != nil {
		log.Error("cdcbridge stopped", "err", redactError(err.Error(), cfg.Postgres.URL))
		return exitFailed
	}
	log.Info("cdcbridge stopped cleanly")
	return exitOK
}

// setMemoryLimit sets the Go runtime's soft memory limit when GOMEMLIMIT is
// not set: 90% of the container's cgroup memory limit when there is one,
// otherwise the in-flight budget plus 64 MiB. Without a limit the collector
// lets the heap grow to about twice what is live, so a full budget would
// take about four times its size; the limit keeps the footprint near the
// budget at the cost of more collection work.
func setMemoryLimit(log *slog.Logger, budget int64) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && limit > 0 {
			debug.SetMemoryLimit(limit * 9 / 10)
			log.Info("memory limit set from the container", "cgroup_limit_bytes", limit, "gomemlimit_bytes", limit*9/10)
			return
		}
	}
	limit := budget + 64<<20
	debug.SetMemoryLimit(limit)
	log.Info("memory limit set from the in-flight budget (set GOMEMLIMIT to choose another)", "gomemlimit_bytes", limit)
}

// sink is what the daemon needs of the Kinesis producer.
type sink interface {
	component
	Run(ctx context.Context) error
	Put(ctx context.Context, e *cdc.Event) error
	Flush(ctx context.Context) error
}

// source is what the daemon needs of a source.
type source interface {
	component
	cdc.Source
	OldestUnacked() (time.Time, bool)
}

// pipeline is a wired source and sink, plus what to close at the end.
type pipeline struct {
	source  source
	sink    sink
	closers []func() error
}

// daemon runs the pipeline until ctx ends or a part fails.
//
// Shutdown order keeps "nothing lost, little repeated": on a signal the
// source's emits are held (it reads no further), the sink flushes what it
// has within CDCBRIDGE_SHUTDOWN_TIMEOUT while the source keeps confirming
// positions as acks arrive, and only then is the source stopped so that its
// final checkpoint covers everything Kinesis accepted.
func daemon(ctx context.Context, cfg *Config, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := newHealth(reg, 2*time.Minute+2*cfg.Sink.RequestTimeout)
	ln, err := h.listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	httpDone := make(chan error, 1)
	go func() { httpDone <- h.serve(httpCtx, ln, log) }()
	defer func() { stopHTTP(); <-httpDone }()

	p, err := build(ctx, cfg, reg, log, h)
	if err != nil {
		return err
	}
	defer func() {
		for i := len(p.closers) - 1; i >= 0; i-- {
			if err := p.closers[i](); err != nil {
				log.Warn("closing", "err", err)
			}
		}
	}()
	registerLag(reg, p.source)

	log.Info("cdcbridge starting", "version", version, "source", cfg.Source, "stream", cfg.Sink.Stream,
		"http_addr", ln.Addr().String(), "ordering", cfg.Sink.Ordering, "aggregate", cfg.Sink.AggregateMode())

	sourceCtx, stopSource := context.WithCancel(runCtx)
	defer stopSource()
	hold := make(chan struct{}) // closed on shutdown: emits wait instead of sending
	emit := func(ectx context.Context, e *cdc.Event) error {
		select {
		case <-hold:
			<-ectx.Done()
			return ectx.Err()
		default:
		}
		return p.sink.Put(ectx, e)
	}

	g, gctx := errgroup.WithContext(runCtx)
	sinkCtx, stopSink := context.WithCancel(runCtx)
	defer stopSink()
	g.Go(func() error {
		if err := p.sink.Run(sinkCtx); err != nil {
			return fmt.Errorf("kinesis sink: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		err := p.source.Run(sourceCtx, emit)
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			if prefix := cfg.Source + " source: "; !strings.HasPrefix(err.Error(), prefix) {
				err = fmt.Errorf("%s%w", prefix, err)
			}
			return err
		case sourceCtx.Err() == nil:
			// Sources return only when told to or on failure: anything else
			// must not leave the daemon running without reading.
			return fmt.Errorf("%s source stopped without an error", cfg.Source)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-gctx.Done(): // a part failed: errgroup cancels the rest
			stopSource()
			stopSink()
			return nil
		case <-ctx.Done():
		}
		log.Info("shutting down: flushing in-flight events", "timeout", cfg.ShutdownTimeout.String())
		close(hold)
		flushCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		start := time.Now()
		if err := p.sink.Flush(flushCtx); err != nil {
			log.Warn("flush did not finish; unacknowledged events will be sent again after a restart", "err", err)
		} else {
			log.Info("flushed", "took", time.Since(start).Round(time.Millisecond).String())
		}
		stopSource() // the source saves its final checkpoint as it returns
		stopSink()
		return nil
	})
	return g.Wait()
}

func registerLag(reg prometheus.Registerer, src source) {
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cdcbridge_lag_seconds",
		Help: "Now minus the commit time of the oldest change not yet accepted by Kinesis; 0 when nothing is pending.",
	}, func() float64 {
		t, ok := src.OldestUnacked()
		if !ok || t.IsZero() {
			return 0
		}
		return max(0, time.Since(t).Seconds())
	})
}
