package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

const installHint = "run scripts/install-test-deps"

// RepoRoot returns the module root: the nearest directory holding go.mod,
// walking up from the working directory (a test binary runs in its package
// directory), else from this source file's directory (a program started
// from elsewhere in a checkout).
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("testenv: no go.mod above the working directory; run from inside the repository")
}

// NodeCache returns RepoRoot/.cache/node, where scripts/install-test-deps
// puts the pinned npm packages.
func NodeCache() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache", "node"), nil
}

// npmPackageDir returns the folder of an installed npm package, or an error
// that says how to install it.
func npmPackageDir(cache, name string) (string, error) {
	dir := filepath.Join(cache, "node_modules", name)
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		return "", fmt.Errorf("npm package %s is not installed in %s (%s)", name, cache, installHint)
	}
	return dir, nil
}

// lookTool finds a program on PATH, or says how to install it.
func lookTool(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH (%s)", name, installHint)
	}
	return path, nil
}

// Tool finds a program a test runs on PATH. Like a missing server, a
// missing program fails the test, except on a developer's `go test -short`
// outside CI.
func Tool(t testing.TB, name string) string {
	t.Helper()
	path, err := lookTool(name)
	if err != nil {
		unavailable(t, name, err)
	}
	return path
}
