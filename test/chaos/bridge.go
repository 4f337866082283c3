package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary builds cmd/cdcbridge once per test binary, with the race
// detector when the tests run with it. CHAOS_BINARY names a binary to use
// instead (one built from another revision, say).
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("CHAOS_BINARY"); p != "" {
			binPath = p
			return
		}
		root, err := testenv.RepoRoot()
		if err != nil {
			binErr = err
			return
		}
		dir, err := os.MkdirTemp("", "chaos-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "cdcbridge")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/cdcbridge")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// BaseEnv is the environment every bridge gets besides its own settings.
func BaseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true", "CDCBRIDGE_LOG_FORMAT=text",
		"GORACE=halt_on_error=0 exitcode=66"}
}

// Bridge runs cdcbridge as a separate process, again and again with the
// same settings: started, killed, stopped, restarted. It keeps every
// instance's log and the worst lag any instance reported.
type Bridge struct {
	t    testing.TB
	env  []string
	dir  string
	Addr string // HTTP address of /metrics, /readyz, /status

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	starts   int
	logPath  string
	worstLag float64
	stopLag  context.CancelFunc

	supervised bool
}

// NewBridge prepares a bridge with env (CDCBRIDGE_* and AWS_ENDPOINT_URL_*
// settings); Start runs it.
func NewBridge(t testing.TB, env ...string) *Bridge {
	t.Helper()
	b := &Bridge{t: t, env: env, dir: t.TempDir(), Addr: freeAddr(t)}
	t.Cleanup(func() {
		b.mu.Lock()
		running := b.cmd != nil && !b.hasExited()
		b.mu.Unlock()
		if running {
			b.Kill()
		}
		if t.Failed() {
			t.Logf("last bridge log:\n%s", b.Log())
		}
	})
	return b
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (b *Bridge) hasExited() bool {
	select {
	case <-b.exited:
		return true
	default:
		return false
	}
}

// Start starts a new instance; the previous one must have exited.
func (b *Bridge) Start(extraEnv ...string) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil && !b.hasExited() {
		b.t.Fatal("chaos: Start while the previous instance runs")
	}
	b.starts++
	b.logPath = filepath.Join(b.dir, fmt.Sprintf("cdcbridge-%02d.log", b.starts))
	f, err := os.Create(b.logPath)
	if err != nil {
		b.t.Fatal(err)
	}
	cmd := exec.Command(Binary(b.t))
	cmd.Env = append(append(append(BaseEnv(), "CDCBRIDGE_HTTP_ADDR="+b.Addr), b.env...), extraEnv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		b.t.Fatal(err)
	}
	exited := make(chan struct{})
	b.cmd, b.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		f.Close()
		b.mu.Lock()
		b.exitErr = err
		b.mu.Unlock()
		close(exited)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	b.stopLag = cancel
	go b.watchLag(ctx, exited)
}

// Restarts is the number of starts after the first.
func (b *Bridge) Restarts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(0, b.starts-1)
}

// WorstLag is the largest cdcbridge_lag_seconds any instance reported.
func (b *Bridge) WorstLag() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Duration(b.worstLag * float64(time.Second))
}

func (b *Bridge) watchLag(ctx context.Context, exited chan struct{}) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-exited:
			return
		case <-t.C:
		}
		if v, err := b.Metric("cdcbridge_lag_seconds"); err == nil {
			b.mu.Lock()
			b.worstLag = max(b.worstLag, v)
			b.mu.Unlock()
		}
	}
}

// Exited is closed when the current instance has exited.
func (b *Bridge) Exited() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.exited
}

// ExitCode is the current instance's exit status (-1 when killed by a
// signal); valid once Exited is closed.
func (b *Bridge) ExitCode() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil || b.cmd.ProcessState == nil {
		return -1
	}
	return b.cmd.ProcessState.ExitCode()
}

// Kill sends SIGKILL and waits for the process to go.
func (b *Bridge) Kill() {
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	b.checkRace()
}

// Term sends SIGTERM and waits up to timeout for the exit; it returns the
// exit code and how long the exit took. The test fails when it does not
// exit in time.
func (b *Bridge) Term(timeout time.Duration) (int, time.Duration) {
	b.t.Helper()
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.mu.Unlock()
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(timeout):
		b.Kill()
		b.t.Fatalf("cdcbridge did not exit within %s of SIGTERM\n%s", timeout, b.Log())
	}
	b.checkRace()
	return b.ExitCode(), time.Since(start)
}

// WaitExit waits up to timeout for the instance to exit on its own and
// returns its exit code; ok is false on timeout.
func (b *Bridge) WaitExit(timeout time.Duration) (code int, ok bool) {
	select {
	case <-b.Exited():
		b.checkRace()
		return b.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

func (b *Bridge) checkRace() {
	if strings.Contains(b.Log(), "WARNING: DATA RACE") {
		b.t.Errorf("the race detector found a data race in cdcbridge:\n%s", b.Log())
	}
}

// Log returns the current instance's log.
func (b *Bridge) Log() string {
	b.mu.Lock()
	p := b.logPath
	b.mu.Unlock()
	data, _ := os.ReadFile(p)
	return string(data)
}

// LogTail returns the last n lines of the current instance's log.
func (b *Bridge) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(b.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// AllLogs returns the logs of every instance, each under a header.
func (b *Bridge) AllLogs() string {
	var out strings.Builder
	files, _ := filepath.Glob(filepath.Join(b.dir, "cdcbridge-*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&out, "=== %s\n%s", filepath.Base(f), data)
	}
	return out.String()
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func (b *Bridge) get(path string) (int, []byte, error) {
	resp, err := httpClient.Get("http://" + b.Addr + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// WaitReady waits until /readyz answers 200; the test fails when the
// instance exits first or the time runs out.
func (b *Bridge) WaitReady(timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-b.Exited():
			b.t.Fatalf("cdcbridge exited during start-up (exit %d)\n%s", b.ExitCode(), b.LogTail(40))
		case <-time.After(50 * time.Millisecond):
		}
		if code, _, err := b.get("/readyz"); err == nil && code == http.StatusOK {
			return
		}
	}
	b.t.Fatalf("cdcbridge not ready after %s\n%s", timeout, b.LogTail(40))
}

// Metric returns the sum of a metric over its labels.
func (b *Bridge) Metric(name string) (float64, error) {
	code, body, err := b.get("/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %d", code)
	}
	sum, found := 0.0, false
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil {
				sum += v
				found = true
			}
		}
	}
	if !found {
		return 0, fmt.Errorf("metric %s not found", name)
	}
	return sum, nil
}

// WaitMetric waits until a metric reaches want.
func (b *Bridge) WaitMetric(name string, want float64, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var got float64
	for time.Now().Before(deadline) {
		select {
		case <-b.Exited():
			b.t.Fatalf("cdcbridge exited (code %d) while waiting for %s >= %v\n%s", b.ExitCode(), name, want, b.LogTail(40))
		case <-time.After(100 * time.Millisecond):
		}
		if v, err := b.Metric(name); err == nil {
			got = v
			if v >= want {
				return
			}
		}
	}
	b.t.Fatalf("%s = %v after %s, want >= %v\n%s", name, got, timeout, want, b.LogTail(40))
}

// Status returns /status as a map.
func (b *Bridge) Status() (map[string]any, error) {
	_, body, err := b.get("/status")
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("/status: %w: %s", err, body)
	}
	return m, nil
}

// Pid returns the current instance's process id.
func (b *Bridge) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd.Process.Pid
}

// Supervise restarts the bridge whenever it exits with a status and log
// that accept approves, as Kubernetes restarts a container that failed;
// any other exit ends the supervision with an error. The returned
// function stops supervising and returns that error, if any.
func (b *Bridge) Supervise(accept func(code int, log string) bool) (stop func() error) {
	done := make(chan struct{})
	result := make(chan error, 1)
	b.mu.Lock()
	b.supervised = true
	b.mu.Unlock()
	go func() {
		for {
			select {
			case <-done:
				result <- nil
				return
			case <-b.Exited():
			}
			code, log := b.ExitCode(), b.Log()
			if !accept(code, log) {
				result <- fmt.Errorf("cdcbridge exited with status %d:\n%s", code, b.LogTail(20))
				return
			}
			b.t.Logf("%s cdcbridge exited with status %d (%s); restarting it", time.Now().Format("15:04:05.000"), code, lastLogLine(log))
			b.Start()
		}
	}()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			close(done)
			err = <-result
			b.mu.Lock()
			b.supervised = false
			b.mu.Unlock()
		})
		return err
	}
}

// Supervised reports whether Supervise restarts the bridge now.
func (b *Bridge) Supervised() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.supervised
}

func lastLogLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
