package deploy

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The tests run in deploy/; the repository root is one up.
const root = ".."

// readYAML reads every document of a YAML file with the strict reader.
func readYAML(t *testing.T, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := parseYAML(path, string(b))
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// dig follows string keys and int indices into a decoded document.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func list(v any) []any {
	s, _ := v.([]any)
	return s
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// goFile is a parsed non-test Go source file of the module.
type goFile struct {
	path string // slash-separated, relative to the repository root
	file *ast.File
	fset *token.FileSet
}

// goSources parses the non-test .go files under the given directories of
// the repository (all of it when none is given; an absolute directory is
// taken as it is). Generated and vendored
// trees do not exist here; hidden directories and testdata are skipped.
func goSources(t *testing.T, dirs ...string) []goFile {
	t.Helper()
	if len(dirs) == 0 {
		dirs = []string{"."}
	}
	var out []goFile
	for _, d := range dirs {
		top := filepath.Join(root, d)
		if filepath.IsAbs(d) {
			top = d
		}
		err := filepath.WalkDir(top, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) && path == top {
					return fs.SkipDir
				}
				return err
			}
			name := e.Name()
			if e.IsDir() {
				if path != top && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
					return fs.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				return nil
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			rel := path
			if !filepath.IsAbs(d) {
				rel, _ = filepath.Rel(root, path)
			}
			out = append(out, goFile{path: filepath.ToSlash(rel), file: f, fset: fset})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// configVariable is one CDCBRIDGE_ variable as `cdcbridge config --json`
// declares it.
type configVariable struct {
	Name    string `json:"name"`
	Default string `json:"default"`
}

var configOnce struct {
	sync.Once
	vars map[string]configVariable
	err  error
}

// configVariables reads the daemon's variables and defaults from
// `cdcbridge config --json`, the declarations the daemon parses its
// environment with, so the artefacts cannot name a variable the daemon
// does not read.
func configVariables(t *testing.T) map[string]configVariable {
	t.Helper()
	configOnce.Do(func() {
		cmd := exec.Command("go", "run", "./cmd/cdcbridge", "config", "--json")
		cmd.Dir = root
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			configOnce.err = fmt.Errorf("cdcbridge config --json: %v\n%s", err, stderr.String())
			return
		}
		var vars []configVariable
		if err := json.Unmarshal(out, &vars); err != nil {
			configOnce.err = fmt.Errorf("cdcbridge config --json: %v", err)
			return
		}
		configOnce.vars = map[string]configVariable{}
		for _, v := range vars {
			configOnce.vars[v.Name] = v
		}
	})
	if configOnce.err != nil {
		t.Fatal(configOnce.err)
	}
	if len(configOnce.vars) < 10 {
		t.Fatalf("cdcbridge config --json lists only %d variables", len(configOnce.vars))
	}
	return configOnce.vars
}

// metricNameRE matches a metric name in PromQL, Go string literals or
// dashboard queries.
var metricNameRE = regexp.MustCompile(`\bcdcbridge_[a-z0-9_]+\b`)

// definedMetrics returns the metric names the daemon's non-test Go code
// defines: string literals that are a whole cdcbridge_ name, and
// Namespace/Subsystem/Name options joined as client_golang joins them.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	whole := regexp.MustCompile(`^cdcbridge_[a-z0-9_]+$`)
	for _, f := range goSources(t) {
		if strings.HasPrefix(f.path, "internal/") {
			continue // test servers and tools, not the daemon
		}
		ast.Inspect(f.file, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.BasicLit:
				if x.Kind == token.STRING {
					if s, err := strconv.Unquote(x.Value); err == nil && whole.MatchString(s) {
						out[s] = true
					}
				}
			case *ast.CompositeLit:
				parts := map[string]string{}
				for _, el := range x.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					k, ok1 := kv.Key.(*ast.Ident)
					v, ok2 := kv.Value.(*ast.BasicLit)
					if !ok1 || !ok2 || v.Kind != token.STRING {
						continue
					}
					s, _ := strconv.Unquote(v.Value)
					parts[k.Name] = s
				}
				if parts["Name"] != "" && (parts["Namespace"] != "" || parts["Subsystem"] != "") {
					var name []string
					for _, p := range []string{parts["Namespace"], parts["Subsystem"], parts["Name"]} {
						if p != "" {
							name = append(name, p)
						}
					}
					if s := strings.Join(name, "_"); whole.MatchString(s) {
						out[s] = true
					}
				}
			}
			return true
		})
	}
	if len(out) < 10 {
		t.Fatalf("found only %d cdcbridge_ metrics in the Go code; have the metrics moved?", len(out))
	}
	return out
}

// checkMetricNames fails for every cdcbridge_ metric in text (with a
// histogram's _bucket, _sum or _count suffix allowed) that the Go code
// does not define, and returns the names used.
func checkMetricNames(t *testing.T, where, text string, defined map[string]bool) []string {
	t.Helper()
	var used []string
	for _, name := range metricNameRE.FindAllString(text, -1) {
		used = append(used, name)
		if defined[name] {
			continue
		}
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(name, suffix) && defined[strings.TrimSuffix(name, suffix)] {
				base = strings.TrimSuffix(name, suffix)
			}
		}
		if !defined[base] {
			t.Errorf("%s uses metric %s, which no Go code of the daemon defines", where, name)
		}
	}
	return used
}

// tool returns the path of an optional external checker, or "" when it is
// not installed.
func tool(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestConfigVariablesInArtefacts: every CDCBRIDGE_ variable named anywhere
// under deploy/ or in the runbook is one the daemon reads.
func TestConfigVariablesInArtefacts(t *testing.T) {
	vars := configVariables(t)
	re := regexp.MustCompile(`\bCDCBRIDGE_[A-Z0-9_]+\b`)
	files := []string{filepath.Join(root, "docs", "runbook.md")}
	err := filepath.WalkDir(".", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() && !strings.HasSuffix(path, ".go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range re.FindAllString(string(b), -1) {
			if _, ok := vars[v]; !ok {
				t.Errorf("%s names %s, which cmd/cdcbridge does not read", f, v)
			}
		}
	}
}

// TestMetricNamesInDocs: every cdcbridge_ metric the runbook or the
// deploy READMEs name is one the daemon defines.
func TestMetricNamesInDocs(t *testing.T) {
	defined := definedMetrics(t)
	files := []string{filepath.Join(root, "docs", "runbook.md")}
	more, err := filepath.Glob(filepath.Join("*", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(append(files, "README.md"), more...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkMetricNames(t, f, string(b), defined)
	}
}
