package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

// endpoint is a running nullkinesis process.
type endpoint struct {
	*child
	URL string // Kinesis endpoint; GET /_fake/counts and /_fake/latency there
}

// endpointCounts is the part of nullkinesis's counts the benchmark reads.
type endpointCounts struct {
	PutRequests  int64
	Accepted     int64
	UserRecords  int64
	UserBytes    int64
	Aggregates   int64
	DecodeErrors int64
	BadEnvelopes int64
	Unique       int64 // distinct envelope ids
	Rejected     int64
	// OrderViolations: with -check-order, changes of a row that came
	// before one of its earlier changes.
	OrderViolations int64
	TopKeyRecords   int64 // distinct changes of the busiest partition key
	TopShardBytes   int64 // record bytes (as sent) of the busiest shard
}

// startEndpoint starts nullkinesis with extra flags (-latency, -delay,
// -check-order).
func (b *bench) startEndpoint(name string, extra ...string) (*endpoint, error) {
	args := append([]string{"-shards", fmt.Sprint(b.opts.shards), "-stream", streamName}, extra...)
	cmd := exec.Command(b.nullkinesis, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c, err := startChild("nullkinesis", cmd, filepath.Join(b.work, name+"-endpoint.log"))
	if err != nil {
		return nil, err
	}
	first := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		first <- line
		_, _ = io.Copy(io.Discard, r)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(10 * time.Second):
	}
	url := strings.TrimSpace(line)
	if !strings.HasPrefix(url, "http://") {
		c.stop(syscall.SIGKILL, 0)
		return nil, fmt.Errorf("nullkinesis did not start (%q): %s", line, c.logTail(10))
	}
	return &endpoint{child: c, URL: url}, nil
}

func (e *endpoint) counts() (endpointCounts, error) {
	var c endpointCounts
	resp, err := http.Get(e.URL + "/_fake/counts")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

// latencySummary mirrors nullkinesis's Summary.
type latencySummary struct {
	N     int     `json:"n"`
	Bad   int64   `json:"bad"`
	Reads int64   `json:"reads"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func (e *endpoint) latency(reset bool) (latencySummary, error) {
	var s latencySummary
	u := e.URL + "/_fake/latency"
	if reset {
		u += "?reset=1"
	}
	resp, err := http.Get(u)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// bridge is a running cdcbridge binary.
type bridge struct {
	*child
	start    time.Time
	env      []string // its environment, for cdcbridge commands beside it
	httpAddr string
	pprof    string // address of the profiling listener, "" without
}

// bridgeEnv is the environment of one bridge run: nothing is inherited
// but PATH and HOME, so that no CDCBRIDGE_, AWS_ or GOMEMLIMIT setting of
// the caller changes what is measured.
func (b *bench) bridgeEnv(dir, httpAddr string, kv ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"CDCBRIDGE_KINESIS_STREAM=" + streamName,
		"CDCBRIDGE_CHECKPOINT_STORE=file://" + filepath.Join(dir, "checkpoints.json"),
		"CDCBRIDGE_DLQ_DIR=" + filepath.Join(dir, "dlq"),
		"CDCBRIDGE_HTTP_ADDR=" + httpAddr,
		"CDCBRIDGE_LOG_FORMAT=text",
		"CDCBRIDGE_ORDERING=key",
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=bench",
		"AWS_SECRET_ACCESS_KEY=bench",
		"AWS_EC2_METADATA_DISABLED=true",
	}
	env = append(env, kv...)
	return append(env, b.opts.env...)
}

// startBridge runs the binary with env (from bridgeEnv) in a new directory.
func (b *bench) startBridge(name string, profile bool, kv ...string) (*bridge, error) {
	return b.startBinary(b.bin, name, profile, kv...)
}

func (b *bench) startBinary(bin, name string, profile bool, kv ...string) (*bridge, error) {
	dir, err := os.MkdirTemp(b.work, name+"-")
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := b.bridgeEnv(dir, httpAddr, kv...)
	var pprofAddr string
	if profile {
		bin = b.profBin
		if pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		env = append(env, "CDCBRIDGE_BENCH_PPROF_ADDR="+pprofAddr)
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	start := time.Now()
	c, err := startChild("cdcbridge", cmd, filepath.Join(dir, "cdcbridge.log"))
	if err != nil {
		return nil, err
	}
	return &bridge{child: c, start: start, env: env, httpAddr: httpAddr, pprof: pprofAddr}, nil
}

func (br *bridge) metrics() (map[string]float64, error) {
	return scrapeMetrics("http://" + br.httpAddr + "/metrics")
}

// shutdown stops the bridge with SIGTERM (flush and checkpoint), killing
// it after grace.
func (br *bridge) shutdown(grace time.Duration) { br.stop(syscall.SIGTERM, grace) }

// waitCount polls count until it reaches want, returning when it did and
// when the first record arrived. It fails when the bridge exits or when
// nothing moved for stall.
// waitCount waits until count reaches want, or (window > 0) until window
// has passed since the bridge started; it returns when, when the first
// change came, and the last count.
func waitCount(ctx context.Context, br *bridge, want int64, stall, window time.Duration, count func() (int64, error), progress *[][2]float64) (done, first time.Time, n int64, err error) {
	last, lastMove := int64(-1), time.Now()
	var lastSample time.Time
	for {
		n, cerr := count()
		now := time.Now()
		if cerr == nil && window > 0 && now.Sub(br.start) >= window {
			*progress = append(*progress, [2]float64{now.Sub(br.start).Seconds(), float64(n)})
			return now, first, n, nil
		}
		if cerr == nil && progress != nil && (now.Sub(lastSample) >= 250*time.Millisecond || n >= want) {
			*progress = append(*progress, [2]float64{now.Sub(br.start).Seconds(), float64(n)})
			lastSample = now
		}
		if cerr == nil {
			if n > 0 && first.IsZero() {
				first = now
			}
			if n >= want {
				return now, first, n, nil
			}
			if n != last {
				last, lastMove = n, now
			}
		}
		if !br.running() {
			return now, first, n, fmt.Errorf("cdcbridge exited after %d of %d records: %v\n%s", max(last, 0), want, br.err, br.logTail(20))
		}
		if now.Sub(lastMove) > stall {
			return now, first, n, fmt.Errorf("no progress for %s at %d of %d records\n%s", stall, max(last, 0), want, br.logTail(20))
		}
		if err := backoff.Wait(ctx, 10*time.Millisecond); err != nil {
			return now, first, n, err
		}
	}
}

// fetchProfile saves one of the bridge's pprof profiles to path.
func (br *bridge) fetchProfile(ctx context.Context, which, path string) error {
	if br.pprof == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+br.pprof+"/debug/pprof/"+which, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s profile: %w", which, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("fetching %s profile: %s: %s", which, resp.Status, strings.TrimSpace(string(body)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
