package chaos

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Disk faults that hold for root too: permission bits do not stop root,
// so a directory is made unusable by replacing it with a file (creating
// anything inside then fails with ENOTDIR), and a directory is made full
// by mounting a tiny tmpfs over it (ENOSPC) or, where the process may
// not mount, by lowering the writer's file size limit (EFBIG).

// BreakDir moves dir aside and puts a file in its place. The returned
// function puts the directory back.
func BreakDir(dir string) (restore func() error, err error) {
	aside := dir + ".aside"
	if err := os.Rename(dir, aside); err != nil {
		return nil, err
	}
	if err := os.WriteFile(dir, []byte("not a directory\n"), 0o644); err != nil {
		_ = os.Rename(aside, dir)
		return nil, err
	}
	// Prove it: root must not be able to create a file in it.
	if f, err := os.CreateTemp(dir, "probe-"); err == nil {
		f.Close()
		return nil, fmt.Errorf("chaos: %s still takes files after being replaced", dir)
	}
	return func() error {
		if err := os.Remove(dir); err != nil {
			return err
		}
		return os.Rename(aside, dir)
	}, nil
}

// FullDir mounts a tmpfs of size bytes over dir (which must exist). It
// fails with ErrCannotMount when the process may not mount.
func FullDir(dir string, size int) (unmount func() error, err error) {
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCannotMount, err)
	}
	return func() error { return unix.Unmount(dir, 0) }, nil
}

// ErrCannotMount says that FullDir needs CAP_SYS_ADMIN.
var ErrCannotMount = errors.New("chaos: cannot mount a tmpfs")

// LimitFileSize lowers the file size limit of process pid: a write that
// would grow a file past n bytes fails with EFBIG. It stands in for a
// full disk where mounting is not allowed.
func LimitFileSize(pid, n int) error {
	lim := unix.Rlimit{Cur: uint64(n), Max: uint64(n)}
	return unix.Prlimit(pid, unix.RLIMIT_FSIZE, &lim, nil)
}

// CheckFull proves that dir refuses a write of n bytes.
func CheckFull(dir string, n int) error {
	p := filepath.Join(dir, ".probe-full")
	defer os.Remove(p)
	err := os.WriteFile(p, make([]byte, n), 0o644)
	if err == nil {
		return fmt.Errorf("chaos: %s took %d bytes", dir, n)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("chaos: writing to %s failed with %v, not ENOSPC", dir, err)
	}
	return nil
}
