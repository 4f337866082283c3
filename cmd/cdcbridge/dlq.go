package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcbridge/cdcbridge/cdc"
	kinesissink "github.com/cdcbridge/cdcbridge/sink/kinesis"
)

const dlqUsage = `Usage:
  cdcbridge dlq list   [--dir DIR]   list dead-lettered events not yet replayed
  cdcbridge dlq replay [--dir DIR]   send them to the stream again

replay re-sends each event with its original id and sequence and
data.replayed = true, after the stream's limit was raised (a record still
over it stops the replay with an error naming the event). A line counts
as replayed once Kinesis accepted it: it is then recorded in FILE.replayed,
so a replay cut short resumes where it stopped. A file whose every line is
replayed is removed, unless a running cdcbridge still writes to it.
It uses the daemon's environment (CDCBRIDGE_KINESIS_STREAM, CDCBRIDGE_DLQ_DIR,
the CDCBRIDGE_KINESIS_* settings, AWS_*).
`

// dlqLine is one line of a dead-letter file (see sink/kinesis/dlq.go).
type dlqLine struct {
	Reason   string          `json:"reason"`
	Stream   string          `json:"stream"`
	Bytes    int             `json:"bytes"`
	Time     string          `json:"time"`
	Envelope json.RawMessage `json:"envelope"`
}

// dlqFile is a dead-letter file with the lines still to replay.
type dlqFile struct {
	path     string
	lines    map[int]dlqLine // 1-based line number -> line, pending only
	total    int
	replayed map[int]bool
}

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		fmt.Fprint(stderr, dlqUsage)
		return exitConfig
	}
	fs := flag.NewFlagSet("dlq "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", os.Getenv("CDCBRIDGE_DLQ_DIR"), "dead-letter directory (default CDCBRIDGE_DLQ_DIR)")
	if err := fs.Parse(args[1:]); err != nil {
		return exitConfig
	}
	if *dir == "" {
		*dir = "/var/lib/cdcbridge/dlq"
	}
	files, err := readDLQDir(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "dlq:", err)
		return exitFailed
	}
	if args[0] == "list" {
		listDLQ(stdout, files)
		return exitOK
	}
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	cfg.Sink.DLQDir = *dir
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	n, err := replayDLQ(ctx, cfg, files, log)
	fmt.Fprintf(stdout, "replayed %d event(s)\n", n)
	if err != nil {
		fmt.Fprintln(stderr, "dlq replay:", redactError(err.Error(), cfg.Postgres.URL))
		fmt.Fprintf(stderr, "events not accepted stay in %s; run the replay again once the cause is fixed (a record over the stream's limit needs a larger MaxRecordSizeInKiB)\n", cfg.Sink.DLQDir)
		return exitFailed
	}
	return exitOK
}

func readDLQDir(dir string) ([]*dlqFile, error) {
	names, err := filepath.Glob(filepath.Join(dir, "dlq-*.jsonl"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("dead-letter directory: %w", err)
	}
	sort.Strings(names)
	var out []*dlqFile
	for _, name := range names {
		f, err := readDLQFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func readDLQFile(path string) (*dlqFile, error) {
	f := &dlqFile{path: path, lines: map[int]dlqLine{}, replayed: map[int]bool{}}
	if done, err := os.ReadFile(path + ".replayed"); err == nil {
		for _, s := range strings.Fields(string(done)) {
			if n, err := strconv.Atoi(s); err == nil {
				f.replayed[n] = true
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<30)
	for sc.Scan() {
		f.total++
		if f.replayed[f.total] {
			continue
		}
		var l dlqLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, f.total, err)
		}
		f.lines[f.total] = l
	}
	return f, sc.Err()
}

func listDLQ(w io.Writer, files []*dlqFile) {
	pending := 0
	for _, f := range files {
		nums := sortedKeys(f.lines)
		for _, n := range nums {
			l := f.lines[n]
			id, subject := "?", "?"
			if e, err := cdc.Decode(l.Envelope); err == nil {
				id, subject = e.ID, e.Subject
			}
			fmt.Fprintf(w, "%s#%d\t%s\t%s\t%d bytes\t%s\t%s\n", filepath.Base(f.path), n, id, subject, l.Bytes, l.Time, l.Reason)
		}
		pending += len(nums)
	}
	fmt.Fprintf(w, "%d event(s) to replay in %d file(s)\n", pending, len(files))
}

func sortedKeys(m map[int]dlqLine) []int {
	out := make([]int, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// replayDLQ puts every pending line through a producer that fails rather
// than dead-letters again, records each accepted line, and removes files
// fully replayed.
func replayDLQ(ctx context.Context, cfg *Config, files []*dlqFile, log *slog.Logger) (int, error) {
	sinkCfg := cfg.Sink
	sinkCfg.Oversize = "fail"
	awsCfg, err := loadAWSConfig(ctx)
	if err != nil {
		return 0, err
	}
	producer, err := kinesissink.New(sinkCfg, kinesissink.NewClient(awsCfg, sinkCfg), prometheus.NewRegistry(), log)
	if err != nil {
		return 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- producer.Run(runCtx) }()

	var mu sync.Mutex
	accepted := 0
	marks := map[string]*os.File{}
	defer func() {
		for _, m := range marks {
			m.Close()
		}
	}()
	var markErr error
	mark := func(f *dlqFile, n int) {
		mu.Lock()
		defer mu.Unlock()
		m := marks[f.path]
		if m == nil {
			var err error
			if m, err = os.OpenFile(f.path+".replayed", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
				markErr = err
				return
			}
			marks[f.path] = m
		}
		if _, err := fmt.Fprintf(m, "%d\n", n); err != nil {
			markErr = err
			return
		}
		if err := m.Sync(); err != nil {
			markErr = err
			return
		}
		f.replayed[n] = true
		accepted++
	}
	var putErr error
put:
	for _, f := range files {
		for _, n := range sortedKeys(f.lines) {
			e, err := cdc.Decode(f.lines[n].Envelope)
			if err != nil {
				putErr = fmt.Errorf("%s line %d: %w", f.path, n, err)
				break put
			}
			e.Replayed = true
			f, n := f, n
			e.OnAck = func() { mark(f, n) }
			if err := producer.Put(ctx, e); err != nil {
				putErr = err
				break put
			}
		}
	}
	flushErr := producer.Flush(ctx)
	stop()
	if err := <-runErr; err != nil && putErr == nil {
		putErr = err
	}
	if putErr == nil {
		putErr = flushErr
	}
	if putErr == nil {
		putErr = markErr
	}
	for _, f := range files {
		if len(f.replayed) == f.total && f.total > 0 && !beingWritten(f.path) {
			if err := os.Remove(f.path); err != nil {
				return accepted, err
			}
			_ = os.Remove(f.path + ".replayed")
			log.Info("dead-letter file fully replayed and removed", "file", f.path, "events", f.total)
		}
	}
	return accepted, putErr
}

// beingWritten reports whether a running cdcbridge holds the file's lock.
func beingWritten(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
