package deploy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The reader must give what a real YAML reader gives for the subset, and
// refuse what it does not understand rather than read it differently.
func TestYAMLReader(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []any
	}{
		{"nested", `
a:
  b: 1
  c: [x, "y z", {k: v}]
  d: {}
seq:
- one
- two: 2
  three: 3.5
-
  - nested
- - inner
  - inner2
empty:
quoted: 'it''s # not a comment' # a comment
url: http://host:9464/metrics
esc: "tab\there \"q\" \u00e9"
`, []any{map[string]any{
			"a":      map[string]any{"b": int64(1), "c": []any{"x", "y z", map[string]any{"k": "v"}}, "d": map[string]any{}},
			"seq":    []any{"one", map[string]any{"two": int64(2), "three": 3.5}, []any{"nested"}, []any{"inner", "inner2"}},
			"empty":  nil,
			"quoted": "it's # not a comment",
			"url":    "http://host:9464/metrics",
			"esc":    "tab\there \"q\" é",
		}}},
		{"block scalars", `
lit: |
  line 1
    indented
  # kept

keep: |+
  k

fold: >-
  a
  b

  c
strip: |-
  s
next: ok
`, []any{map[string]any{
			"lit":   "line 1\n  indented\n# kept\n",
			"keep":  "k\n\n",
			"fold":  "a b\nc",
			"strip": "s",
			"next":  "ok",
		}}},
		{"sequence item block scalar", `
- |
  text
- plain
`, []any{[]any{"text\n", "plain"}}},
		{"documents", "a: 1\n---\n# only a comment\nb: true\n---\n- x\n", []any{
			map[string]any{"a": int64(1)}, map[string]any{"b": true}, []any{"x"},
		}},
		{"types", `
i: -42
f: 1e3
n: ~
s: 1.2.3
t: "true"
`, []any{map[string]any{"i": int64(-42), "f": 1000.0, "n": nil, "s": "1.2.3", "t": "true"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseYAML(tt.name, tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestYAMLReaderRefuses(t *testing.T) {
	for _, src := range []string{
		"a: &x 1\nb: *x\n",         // anchors and aliases
		"a: !!str 1\n",             // tags
		"a: yes\n",                 // YAML 1.1 boolean
		"a: On\n",                  // YAML 1.1 boolean
		"mode: 0644\n",             // octal in YAML 1.1, decimal in 1.2
		"t: 1:30\n",                // sexagesimal in YAML 1.1
		"a: one\n  two\n",          // multi-line plain scalar
		"a: \"open\n  close\"\n",   // multi-line quoted scalar
		"a: 1\na: 2\n",             // duplicate key
		"a:\n\t- x\n",              // tab indentation
		"? complex\n: key\n",       // complex key
		"a: b: c\n",                // ambiguous plain scalar
		"a:\n  - x\n   - y\n",      // inconsistent indentation
		"a: [1, 2\n",               // unterminated flow
		"a: |2\n   x\n",            // indentation indicator
		"- a\n  b\n",               // continuation of a sequence scalar
		"a: 1\n  b: 2\n",           // deeper line after a complete entry
		"key: value # ok\n x: 1\n", // deeper line after a complete entry
	} {
		if v, err := parseYAML("refuse", src); err == nil {
			t.Errorf("parseYAML(%q) = %#v, want an error", src, v)
		} else if !strings.HasPrefix(err.Error(), "refuse:") {
			t.Errorf("error %q does not name the file", err)
		}
	}
}
