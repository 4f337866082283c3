//go:build unix

package file

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive, non-blocking flock on path (created if
// missing). The kernel drops it when the process dies, so a crash never
// leaves a stale lock behind.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("checkpoint file: opening lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("checkpoint file: %s is locked by another process "+
				"(two instances must not share one checkpoint file; use a dynamodb:// store for several instances)", path)
		}
		return nil, fmt.Errorf("checkpoint file: locking %s: %w", path, err)
	}
	return f, nil
}
