//go:build !unix

package file

import (
	"fmt"
	"os"
)

// lockFile opens path without locking it: this platform has no flock, so
// keeping one process per file is left to the operator.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("checkpoint file: opening lock %s: %w", path, err)
	}
	return f, nil
}
