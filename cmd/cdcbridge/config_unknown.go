package main

import (
	"sort"
	"strings"
)

// ignoredPrefixes are CDCBRIDGE_ variables that belong to the repository's
// tests and benchmarks (CDCBRIDGE_TEST_PG_VERSION, CDCBRIDGE_BENCH_PPROF_ADDR,
// ...), not to the daemon; they may be in its environment and are ignored.
var ignoredPrefixes = []string{envPrefix + "_TEST_", envPrefix + "_BENCH_"}

// unknownVariables records a problem for every CDCBRIDGE_ variable in env
// (KEY=VALUE entries) that is not an option, naming the nearest option.
// It is an error, not a warning: an ignored typo changes what the bridge
// does (CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSON=gzip would run without
// compression), and a refusal to start is noticed where a warning scrolls
// away.
func (p *parser) unknownVariables(env []string) {
	known := make(map[string]bool, len(options))
	for _, o := range options {
		known[name(o.name)] = true
	}
	var unknown []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix+"_") || known[k] || ignored(k) {
			continue
		}
		unknown = append(unknown, k)
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		p.add("%s is not a cdcbridge variable; did you mean %s? (cdcbridge config lists them all)", k, nearestOption(k))
	}
}

func ignored(k string) bool {
	for _, prefix := range ignoredPrefixes {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// nearestOption is the option name closest to k by edit distance (the
// first declared among equals).
func nearestOption(k string) string {
	best, bestDist := "", -1
	for _, o := range options {
		if d := editDistance(k, name(o.name)); bestDist < 0 || d < bestDist {
			best, bestDist = name(o.name), d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes: the
// names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
