package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShippedImports holds the layout the README's development section
// shows: the binary links no test rig (test/) and no tool (tools/), the
// formats consumers read (kpl, hashkey, cdc) import nothing of the
// producer or the sources, and the sources and the sink do not import
// each other.
func TestShippedImports(t *testing.T) {
	const mod = "github.com/cdcbridge/cdcbridge/"
	deps := func(pkg string) []string {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		var ours []string
		for _, p := range strings.Fields(string(out)) {
			if strings.HasPrefix(p, mod) && p != mod+pkg {
				ours = append(ours, strings.TrimPrefix(p, mod))
			}
		}
		return ours
	}
	forbidden := map[string][]string{
		"cmd/cdcbridge":    {"test/", "tools/"},
		"kpl":              {"sink/", "sources/", "checkpoint", "cmd/", "test/", "tools/"},
		"hashkey":          {"sink/", "sources/", "checkpoint", "cmd/", "test/", "tools/"},
		"cdc":              {"sink/", "sources/", "checkpoint", "cmd/", "test/", "tools/", "kpl", "hashkey"},
		"dedupe":           {"sink/", "sources/", "checkpoint", "cmd/", "test/", "tools/"},
		"sink/kinesis":     {"sources/", "cmd/", "test/", "tools/"},
		"sources/postgres": {"sink/", "sources/dynamodb", "cmd/", "test/", "tools/"},
		"sources/dynamodb": {"sink/", "sources/postgres", "checkpoint/dynamodb", "cmd/", "test/", "tools/"},
	}
	for pkg, bad := range forbidden {
		for _, d := range deps(pkg) {
			for _, b := range bad {
				if strings.HasPrefix(d, b) {
					t.Errorf("%s imports %s", pkg, d)
				}
			}
		}
	}
}
