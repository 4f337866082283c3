package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestREADMEConfigTable fails when the README's configuration table and
// `cdcbridge config` disagree, so the documentation cannot drift.
func TestREADMEConfigTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(CDCBRIDGE_[A-Z0-9_]+)` \\| (.*?) \\| (.*) \\|$")
	var got []configVar
	for _, line := range strings.Split(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		def := strings.Trim(m[2], "`")
		if def == "(none)" {
			def = ""
		}
		got = append(got, configVar{Name: m[1], Default: def, Desc: m[3]})
	}
	want := configVars()
	for i := range want {
		want[i].Secret = false
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("README configuration table differs from `cdcbridge config` (-config +README):\n%s\nRegenerate it with: go test ./cmd/cdcbridge -run TestREADMEConfigTable -v (rows below)\n%s", diff, readmeRows())
	}
}

func readmeRows() string {
	var b strings.Builder
	for _, v := range configVars() {
		def := "(none)"
		if v.Default != "" {
			def = "`" + v.Default + "`"
		}
		b.WriteString("| `" + v.Name + "` | " + def + " | " + v.Desc + " |\n")
	}
	return b.String()
}
