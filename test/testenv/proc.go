package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one server child. Its stdout and stderr go to a log file,
// written by the child through an inherited descriptor, so no goroutine of
// ours has to copy output and the log survives the child.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once cmd.Wait returned
	waitErr error         // valid after done is closed
}

// startProcess starts cmd in its own process group, with its output
// appended to logPath.
//
// The own group lets stop reach grandchildren (a JVM's helpers; not
// PostgreSQL backends, which start groups of their own, see
// Postgres.killLocked) with one signal, and keeps a terminal's Ctrl-C from
// hitting the servers before the test binary has a chance to stop them in
// order.
// Pdeathsig kills the child when the test binary dies without cleaning up
// (a panic, a test timeout, SIGKILL). Linux ties it to the OS thread that
// forked the child; the Go runtime only retires threads locked with
// runtime.LockOSThread, so in practice it fires when the process ends.
func startProcess(name string, cmd *exec.Cmd, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s log: %w", name, err)
	}
	defer logFile.Close() // the child holds its own copy after Start
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, cmd.Path, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exitErr reports how the process ended, or nil while it runs.
func (p *process) exitErr() error {
	select {
	case <-p.done:
		if p.waitErr == nil {
			return errors.New("exited with status 0")
		}
		return p.waitErr
	default:
		return nil
	}
}

// stop sends sig to the process group and waits up to grace for the leader
// to exit, then kills the whole group. The group is only signalled while
// the leader is not yet reaped, so its id cannot have been reused.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, sig)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("%s did not stop within %v after %v; killed", p.name, grace, sig)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.name, pgid)
	}
}

// procStat reads the state and parent of a process from /proc; ok is
// false when it is gone.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid, true
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var out []int
	for _, e := range entries {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(c); ok && ppid == pid {
			out = append(out, c)
		}
	}
	return out, nil
}

// waitGone waits until none of pids runs any more. Zombies count as gone:
// they hold no memory, shared or not.
func waitGone(pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for {
			state, _, ok := procStat(pid)
			if !ok || state == "Z" || state == "X" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d still running %v after SIGKILL", pid, timeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// log returns the tail of the process's log.
func (p *process) log() string { return tailFile(p.logPath, 40) }

// waitReady polls probe until it succeeds, the process exits, or timeout
// passes. The error carries the log tail: the usual reason a server does
// not come up is written there, not in the probe's error.
func (p *process) waitReady(timeout time.Duration, probe func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		if err := p.exitErr(); err != nil {
			return p.withLog(fmt.Errorf("%s exited before it was ready: %w", p.name, err))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		lastErr = probe(ctx)
		cancel()
		if lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return p.withLog(fmt.Errorf("%s not ready after %v: %w", p.name, timeout, lastErr))
		}
		select {
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *process) withLog(err error) error {
	return fmt.Errorf("%w\n--- %s log, last lines ---\n%s", err, p.name, p.log())
}

// addrInUse tells whether a failed start lost a race for its port, which is
// worth another try on a new port.
func addrInUse(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "address already in use") || strings.Contains(s, "eaddrinuse")
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the server binds it; callers retry on addrInUse.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// retryOnPortRace runs start up to three times while it fails because its
// port was taken in the meantime.
func retryOnPortRace[T any](start func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 3 {
		v, err = start()
		if err == nil || !addrInUse(err) {
			break
		}
	}
	return v, err
}

// tailFile returns about the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const maxTail = 16 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxTail {
		_, _ = f.Seek(-maxTail, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := string(bytes.Join(lines, []byte("\n")))
	if out == "" {
		return "(log is empty)"
	}
	return out
}
