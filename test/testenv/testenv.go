// Package testenv starts real servers for tests: a throwaway PostgreSQL
// cluster (15 by default; PostgresVersionEnv picks 14 to 18), kinesalite,
// kinesis-mock and DynamoDB Local. Each listens on a free loopback port,
// keeps its files in its own temporary directory, and is stopped (and its
// directory removed) by Stop, by Main after the package's tests, or, if
// the test binary dies first, by the kernel (Pdeathsig).
//
// A start waits until the server answers a real request. When a server
// cannot start, the error includes the tail of the server's own log, where
// the reason usually is.
//
// The PG, Kinesalite, KinesisMock and DynamoDB helpers start one server per
// test binary on first use and share it among all tests of the package;
// tests keep apart by using their own database, stream or table names, and
// must not Stop a shared server. A test that needs to stop or restart a
// server starts a private one with StartPostgres and friends.
//
// Binaries come from scripts/install-test-deps: PostgreSQL 15 and Java from
// Debian packages, the Node.js emulators and the other PostgreSQL versions
// from RepoRoot/.cache/node.
package testenv

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

// Main runs the package's tests and then stops every server this package
// started. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	stopAll()
	return code
}

// stopper is a running server that Main stops.
type stopper interface{ Stop() error }

var (
	runningMu sync.Mutex
	running   = map[stopper]struct{}{}
)

func track(s stopper) {
	runningMu.Lock()
	running[s] = struct{}{}
	runningMu.Unlock()
}

func untrack(s stopper) {
	runningMu.Lock()
	delete(running, s)
	runningMu.Unlock()
}

// stopAll stops the servers in parallel: a Postgres fast shutdown and a
// JVM exit each take a moment, and they do not depend on each other.
func stopAll() {
	runningMu.Lock()
	all := make([]stopper, 0, len(running))
	for s := range running {
		all = append(all, s)
	}
	runningMu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { _ = s.Stop() })
	}
	wg.Wait()
}

// shared lazily starts one server per test binary.
type shared[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (s *shared[T]) get(t testing.TB, what string, start func() (T, error)) T {
	t.Helper()
	s.once.Do(func() { s.v, s.err = start() })
	if s.err != nil {
		unavailable(t, what, s.err)
	}
	return s.v
}

// Unavailable fails the test for want of what (a server, a program, a
// privilege), except on a developer's `go test -short` outside CI, where
// it skips it.
func Unavailable(t testing.TB, what string, err error) {
	t.Helper()
	unavailable(t, what, err)
}

// unavailable fails the test, except on a developer's `go test -short`
// outside CI, where a missing server is a reason to skip, not to fail.
func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "" && testing.Short() {
		t.Skipf("%s unavailable (-short, not CI): %v", what, err)
	}
	t.Fatalf("%s unavailable: %v", what, err)
}

var (
	sharedPG          shared[*Postgres]
	sharedKinesalite  shared[*Kinesis]
	sharedKinesisMock shared[*Kinesis]
	sharedDynamoDB    shared[*DynamoDBLocal]
)

// PG returns the package's shared PostgreSQL cluster, starting it on first
// use, of the version PostgresVersionEnv asks for (Postgres.Major says
// which). A value of the variable that names no supported version fails
// the test even where a missing server would only skip it.
func PG(t testing.TB) *Postgres {
	t.Helper()
	if _, err := envPostgresVersion(); err != nil {
		t.Fatal(err)
	}
	return sharedPG.get(t, "postgres", func() (*Postgres, error) {
		return StartPostgres(PostgresOptions{})
	})
}

// Kinesalite returns the package's shared kinesalite, starting it on first use.
func Kinesalite(t testing.TB) *Kinesis {
	t.Helper()
	return sharedKinesalite.get(t, "kinesalite", StartKinesalite)
}

// KinesisMock returns the package's shared kinesis-mock, starting it on first use.
func KinesisMock(t testing.TB) *Kinesis {
	t.Helper()
	return sharedKinesisMock.get(t, "kinesis-mock", StartKinesisMock)
}

// DynamoDB returns the package's shared DynamoDB Local, starting it on first use.
func DynamoDB(t testing.TB) *DynamoDBLocal {
	t.Helper()
	return sharedDynamoDB.get(t, "dynamodb-local", StartDynamoDB)
}

var nameSeq atomic.Int64

// UniqueName returns prefix followed by a suffix unique within this test
// binary, usable as a Kinesis stream, DynamoDB table or Postgres
// database, slot or publication name (lower case, digits, underscores).
// Shared servers outlive a single test, and `go test -count=N` runs the
// same test again against them, so fixed names collide.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), nameSeq.Add(1))
}
