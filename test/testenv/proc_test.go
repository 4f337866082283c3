package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A child that dies during start must surface its log in the error.
func TestStartFailureShowsLog(t *testing.T) {
	t.Parallel()
	_, err := startKinesis("broken", func(cache, dir string, port int) (*exec.Cmd, error) {
		return exec.Command("sh", "-c", "echo 'cannot bind: it is a test' >&2; exit 3"), nil
	})
	if err == nil {
		t.Fatal("start succeeded")
	}
	for _, want := range []string{"broken exited before it was ready", "exit status 3", "cannot bind: it is a test"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestMissingNPMPackage(t *testing.T) {
	t.Parallel()
	_, err := npmPackageDir(t.TempDir(), "kinesalite")
	if err == nil || !strings.Contains(err.Error(), "run scripts/install-test-deps") {
		t.Fatalf("err = %v, want a hint to run scripts/install-test-deps", err)
	}
}

// stop must reach the whole process group and fall back to SIGKILL.
func TestStopKillsStubbornGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The shell ignores SIGTERM; its child sleeps in the same group.
	cmd := exec.Command("sh", "-c", "trap '' TERM; sleep 60 & echo $! > child.pid; wait")
	cmd.Dir = dir
	p, err := startProcess("stubborn", cmd, dir+"/log")
	if err != nil {
		t.Fatal(err)
	}
	var childPID int
	for deadline := time.Now().Add(5 * time.Second); childPID == 0 && time.Now().Before(deadline); {
		b, _ := os.ReadFile(dir + "/child.pid")
		childPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	if childPID == 0 {
		t.Fatal("child did not start")
	}
	if err := p.stop(syscall.SIGTERM, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("stop = %v, want an error saying it killed", err)
	}
	// The orphaned child is reparented and reaped by init (or a subreaper)
	// shortly after SIGKILL.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(childPID, 0) != nil {
			break
		}
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(childPID) + "/stat"); strings.Contains(string(b), ") Z ") {
			break // killed, waiting for its reaper
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d outlived stop", childPID)
		}
	}
}
