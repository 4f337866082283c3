package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cdcbridge/cdcbridge/internal/backoff"
)

// throughputRun is one bridge run that delivers a known number of changes
// into a fresh null endpoint.
type throughputRun struct {
	Seconds          float64 `json:"seconds"`            // bridge start to the last change counted by the endpoint
	ChangesPerSecond float64 `json:"changes_per_second"` // changes / seconds
	StartupSeconds   float64 `json:"startup_seconds"`    // bridge start to the first change counted
	CPUSeconds       float64 `json:"cpu_seconds"`        // the bridge process, user + system
	CPUPer100k       float64 `json:"cpu_seconds_per_100k_changes"`
	PeakRSSMiB       float64 `json:"peak_rss_mib"` // VmHWM of the bridge process
	WalsenderCPU     float64 `json:"walsender_cpu_seconds,omitempty"`
	EndpointCPU      float64 `json:"endpoint_cpu_seconds"`
	PutRequests      int64   `json:"put_requests"`
	KinesisRecords   int64   `json:"kinesis_records"` // records on the stream (aggregates count once)
	UserRecords      int64   `json:"user_records"`    // de-aggregated: the changes
	Duplicates       int64   `json:"duplicates"`      // user records whose id came before
	Aggregates       int64   `json:"aggregates"`
	OrderViolations  int64   `json:"order_violations"` // with an order-checking endpoint
	TopKeyRecords    int64   `json:"top_key_records"`  // distinct changes of the busiest row (same)
	UserBytes        int64   `json:"user_bytes"`
	TopShardBytes    int64   `json:"top_shard_bytes"` // record bytes (as sent) of the busiest shard
	// LoadAverage is the machine's 1-minute load average at the end.
	LoadAverage float64 `json:"load_average_1m"`
	// Progress is [seconds since start, changes delivered] every 250 ms.
	Progress [][2]float64 `json:"progress"`
}

// runSpec describes one throughput run.
type runSpec struct {
	name    string
	env     []string // CDCBRIDGE_* and AWS_* settings of the source
	want    int64    // changes to deliver
	slot    string   // Postgres slot, to follow its walsender's CPU
	stall   time.Duration
	profile string // with -profile: file name stem for the saved profiles
	cpuProf time.Duration
	// kinesisURL is a Kinesis endpoint to use instead of a new null one;
	// count then says how many changes it accepted.
	kinesisURL string
	count      func(br *bridge) (int64, error)
	bin        string // the binary to run instead of bin/cdcbridge
	// endpoint holds extra flags of the null endpoint (-delay, -check-order).
	endpoint []string
	// window, when set, ends the run after that long: the rate is then
	// what was delivered by then (for runs too slow to drain the backlog).
	window time.Duration
}

func (b *bench) runThroughput(ctx context.Context, s runSpec) (throughputRun, error) {
	var r throughputRun
	var ep *endpoint
	kinesisURL := s.kinesisURL
	if kinesisURL == "" {
		var err error
		if ep, err = b.startEndpoint(s.name, s.endpoint...); err != nil {
			return r, err
		}
		defer ep.stop(syscall.SIGTERM, 5*time.Second)
		kinesisURL = ep.URL
	}
	env := append([]string{"AWS_ENDPOINT_URL_KINESIS=" + kinesisURL}, s.env...)
	profile := s.profile != "" && b.opts.profile
	bin := b.bin
	if s.bin != "" {
		bin = s.bin
	}
	br, err := b.startBinary(bin, s.name, profile, env...)
	if err != nil {
		return r, err
	}
	defer br.shutdown(30 * time.Second)

	cpuDone := make(chan error, 1)
	if profile {
		go func() {
			secs := max(1, int(s.cpuProf.Round(time.Second)/time.Second))
			// The listener comes up with the process; retry until it does.
			var err error
			for range 200 {
				err = br.fetchProfile(ctx, "profile?seconds="+strconv.Itoa(secs), b.profilePath("cpu-"+s.profile))
				if err == nil || ctx.Err() != nil {
					break
				}
				if backoff.Wait(ctx, 5*time.Millisecond) != nil {
					break
				}
			}
			cpuDone <- err
		}()
		// The heap in use halfway through, when the in-flight budget is
		// full: what the peak RSS is made of.
		go func() {
			if backoff.Wait(ctx, s.cpuProf/2) == nil {
				_ = br.fetchProfile(ctx, "heap", b.profilePath("heap-"+s.profile))
			}
		}()
	}
	wpidc := make(chan int, 1)
	go func() {
		if s.slot == "" {
			wpidc <- 0
			return
		}
		wpidc <- walsenderPID(ctx, b.conn, s.slot, 30*time.Second)
	}()

	count := func() (int64, error) {
		if s.count != nil {
			return s.count(br)
		}
		c, err := ep.counts()
		return c.Unique, err
	}
	stall := s.stall
	if stall == 0 {
		stall = 60 * time.Second
	}
	done, first, n, err := waitCount(ctx, br, s.want, stall, s.window, count, &r.Progress)
	if err != nil {
		return r, fmt.Errorf("%s: %w", s.name, err)
	}
	st, err := readProc(br.pid())
	if err != nil {
		return r, err
	}
	if wpid := <-wpidc; wpid != 0 {
		if ws, err := readProc(wpid); err == nil {
			r.WalsenderCPU = ws.CPUSeconds
		}
	}
	if ep != nil {
		if es, err := readProc(ep.pid()); err == nil {
			r.EndpointCPU = es.CPUSeconds
		}
	}
	r.LoadAverage = loadAverage()
	r.Seconds = done.Sub(br.start).Seconds()
	r.StartupSeconds = first.Sub(br.start).Seconds()
	r.ChangesPerSecond = float64(n) / r.Seconds
	r.CPUSeconds = st.CPUSeconds
	r.CPUPer100k = st.CPUSeconds / float64(max(n, 1)) * 100_000
	r.PeakRSSMiB = float64(st.PeakRSS) / (1 << 20)
	if ep == nil {
		r.UserRecords = s.want
	} else if c, err := ep.counts(); err == nil {
		r.PutRequests, r.KinesisRecords, r.UserRecords, r.Aggregates = c.PutRequests, c.Accepted, c.UserRecords, c.Aggregates
		r.Duplicates = c.UserRecords - c.Unique
		r.OrderViolations, r.TopKeyRecords, r.UserBytes, r.TopShardBytes = c.OrderViolations, c.TopKeyRecords, c.UserBytes, c.TopShardBytes
		if c.DecodeErrors > 0 || c.Rejected > 0 || c.BadEnvelopes > 0 || c.OrderViolations > 0 {
			return r, fmt.Errorf("%s: the endpoint rejected %d requests, failed to decode %d aggregates, found %d records that are not envelopes and %d changes of a row out of order",
				s.name, c.Rejected, c.DecodeErrors, c.BadEnvelopes, c.OrderViolations)
		}
	}
	if profile {
		if err := <-cpuDone; err != nil {
			return r, err
		}
		if err := br.fetchProfile(ctx, "allocs", b.profilePath("allocs-"+s.profile)); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (b *bench) profilePath(stem string) string {
	dir := filepath.Join(b.opts.outDir, "profiles")
	_ = os.MkdirAll(dir, 0o755)
	return filepath.Join(dir, stem+".pprof")
}
