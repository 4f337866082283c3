package deploy

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	rulesFile     = "prometheus/cdcbridge.rules.yaml"
	rulesTestFile = "prometheus/cdcbridge.rules.test.yaml"
	runbookFile   = "docs/runbook.md" // from the repository root
)

// alertRule is one alerting rule as read from the rules file.
type alertRule struct {
	name, expr, forDur string
	labels, annots     map[string]any
}

func readAlertRules(t *testing.T) []alertRule {
	t.Helper()
	docs := readYAML(t, rulesFile)
	if len(docs) != 1 {
		t.Fatalf("%s: want one document, got %d", rulesFile, len(docs))
	}
	var out []alertRule
	groups := map[string]bool{}
	for gi, g := range list(dig(docs[0], "groups")) {
		gname := str(dig(g, "name"))
		if gname == "" || groups[gname] {
			t.Errorf("%s: group %d needs a unique name", rulesFile, gi+1)
		}
		groups[gname] = true
		for k := range obj(g) {
			if k != "name" && k != "rules" && k != "interval" && k != "limit" {
				t.Errorf("%s: group %s has unknown field %q", rulesFile, gname, k)
			}
		}
		for ri, r := range list(dig(g, "rules")) {
			m := obj(r)
			for k := range m {
				switch k {
				case "alert", "expr", "for", "labels", "annotations", "keep_firing_for":
				default:
					t.Errorf("%s: group %s rule %d has field %q, which alerting rules do not have", rulesFile, gname, ri+1, k)
				}
			}
			ar := alertRule{name: str(m["alert"]), expr: str(m["expr"]), forDur: str(m["for"]), labels: obj(m["labels"]), annots: obj(m["annotations"])}
			if ar.name == "" || ar.expr == "" {
				t.Errorf("%s: group %s rule %d needs alert and expr", rulesFile, gname, ri+1)
				continue
			}
			out = append(out, ar)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no alerting rules", rulesFile)
	}
	return out
}

// TestPrometheusRules checks the rules file in Go (always), and with
// promtool when it is installed. In CI without promtool the Go checks must
// have run and passed; the test says which ran.
func TestPrometheusRules(t *testing.T) {
	goOK := t.Run("go", testRulesInGo)
	t.Run("promtool", func(t *testing.T) {
		promtool := tool("promtool")
		if promtool == "" {
			if os.Getenv("CI") != "" && !goOK {
				t.Fatal("promtool is not installed and the Go checks of the rules failed: nothing checked the rules")
			}
			t.Log("promtool not installed (Debian package prometheus): the rules were checked by the Go fallback only")
			return
		}
		for _, args := range [][]string{
			{"check", "rules", filepath.Base(rulesFile)},
			{"test", "rules", filepath.Base(rulesTestFile)},
		} {
			cmd := exec.Command(promtool, args...)
			cmd.Dir = filepath.Dir(rulesFile)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
				continue
			}
			t.Logf("promtool %s: %s", strings.Join(args, " "), strings.Join(strings.Fields(string(out)), " "))
		}
	})
}

var (
	alertNameRE   = regexp.MustCompile(`^Cdcbridge[A-Z][A-Za-z0-9]+$`)
	promDuration  = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
	rangeRE       = regexp.MustCompile(`\[([^\]]*)\]`)
	funcCallRE    = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*\(`)
	templateVarRE = regexp.MustCompile(`\{\{\s*\$(labels\.[a-z_]+|value)(\s*\|\s*(humanize|humanize1024|humanizeDuration|humanizePercentage))?\s*\}\}`)
)

// The PromQL functions and keywords the rules may call; anything else is a
// typo or a function to add here after checking it exists.
var promqlCalls = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true,
	"rate": true, "increase": true, "deriv": true, "changes": true, "resets": true,
	"predict_linear": true, "histogram_quantile": true, "absent": true, "absent_over_time": true,
	"max_over_time": true, "min_over_time": true, "avg_over_time": true, "clamp_min": true, "clamp_max": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "time": true, "timestamp": true, "vector": true, "scalar": true,
}

func testRulesInGo(t *testing.T) {
	defined := definedMetrics(t)
	rules := readAlertRules(t)
	anchors := runbookAnchors(t)
	severities := map[string]map[string]bool{} // alert -> severities
	for _, r := range rules {
		where := fmt.Sprintf("%s: alert %s", rulesFile, r.name)
		if !alertNameRE.MatchString(r.name) {
			t.Errorf("%s: name should be CdcbridgeCamelCase", where)
		}
		if r.forDur != "" && !promDuration.MatchString(r.forDur) {
			t.Errorf("%s: for %q is not a Prometheus duration", where, r.forDur)
		}
		checkPromQL(t, where, r.expr)
		if used := checkMetricNames(t, where, r.expr, defined); len(used) == 0 && !strings.Contains(r.expr, "up{") {
			t.Errorf("%s: the expression uses no cdcbridge metric", where)
		}
		sev := str(r.labels["severity"])
		switch sev {
		case "critical", "warning", "info":
		default:
			t.Errorf("%s: severity %q, want critical, warning or info", where, sev)
		}
		if severities[r.name] == nil {
			severities[r.name] = map[string]bool{}
		}
		if severities[r.name][sev] {
			t.Errorf("%s: two rules with severity %s", where, sev)
		}
		severities[r.name][sev] = true
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if str(r.annots[a]) == "" {
				t.Errorf("%s: needs a %s annotation", where, a)
			}
		}
		for k, v := range r.annots {
			s := str(v)
			if strings.Count(s, "{{") != strings.Count(s, "}}") {
				t.Errorf("%s: annotation %s has unbalanced template braces", where, k)
			}
			rest := templateVarRE.ReplaceAllString(s, "")
			if strings.Contains(rest, "{{") {
				t.Errorf("%s: annotation %s uses a template these tests do not know: %q", where, k, s)
			}
		}
		u, err := url.Parse(str(r.annots["runbook_url"]))
		if err != nil || !strings.HasSuffix(u.Path, "/"+runbookFile) {
			t.Errorf("%s: runbook_url %q does not point at %s", where, r.annots["runbook_url"], runbookFile)
		} else if want := strings.ToLower(r.name); u.Fragment != want || !anchors[want] {
			t.Errorf("%s: runbook_url should end in #%s, a section of %s (found: %v)", where, want, runbookFile, u.Fragment)
		}
	}
	checkRuleTests(t, severities)
}

// checkPromQL checks what can be checked of PromQL without a parser:
// balanced brackets outside strings, known functions, valid ranges and
// label matchers.
func checkPromQL(t *testing.T, where, expr string) {
	t.Helper()
	var stack []byte
	inStr := byte(0)
	var bare strings.Builder // the expression without string literals
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		if inStr != 0 {
			if c == '\\' {
				i++
			} else if c == inStr {
				inStr = 0
				bare.WriteString(`""`)
			}
			continue
		}
		switch c {
		case '"', '\'', '`':
			inStr = c
			continue
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			open := map[byte]byte{')': '(', ']': '[', '}': '{'}[c]
			if len(stack) == 0 || stack[len(stack)-1] != open {
				t.Errorf("%s: unbalanced %q at offset %d", where, c, i)
				return
			}
			stack = stack[:len(stack)-1]
		case '#':
			t.Errorf("%s: comment inside the expression", where)
		}
		bare.WriteByte(c)
	}
	if inStr != 0 || len(stack) != 0 {
		t.Errorf("%s: unterminated string or bracket", where)
		return
	}
	b := bare.String()
	for _, m := range funcCallRE.FindAllStringSubmatch(b, -1) {
		if !promqlCalls[m[1]] {
			t.Errorf("%s: %s( is not a PromQL function these rules are known to use", where, m[1])
		}
	}
	for _, m := range rangeRE.FindAllStringSubmatch(b, -1) {
		// A range, or a subquery's range and optional resolution.
		rng, res, sub := strings.Cut(m[1], ":")
		if !promDuration.MatchString(rng) || sub && res != "" && !promDuration.MatchString(res) {
			t.Errorf("%s: range [%s] is not a duration", where, m[1])
		}
	}
	matcher := regexp.MustCompile(`^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*""\s*$`)
	for _, sel := range regexp.MustCompile(`\{([^{}]*)\}`).FindAllStringSubmatch(b, -1) {
		for _, part := range strings.Split(sel[1], ",") {
			if !matcher.MatchString(part) {
				t.Errorf("%s: label matcher %q is malformed", where, part)
			}
		}
	}
}

// checkRuleTests requires, for every alert, a promtool case where it fires
// with each of its severities and one where it stays quiet.
func checkRuleTests(t *testing.T, severities map[string]map[string]bool) {
	docs := readYAML(t, rulesTestFile)
	if len(docs) != 1 {
		t.Fatalf("%s: want one document", rulesTestFile)
	}
	if files := list(dig(docs[0], "rule_files")); len(files) != 1 || str(files[0]) != filepath.Base(rulesFile) {
		t.Errorf("%s: rule_files should be [%s]", rulesTestFile, filepath.Base(rulesFile))
	}
	defined := definedMetrics(t)
	fired := map[string]map[string]bool{}
	quiet := map[string]bool{}
	for _, tc := range list(dig(docs[0], "tests")) {
		for _, s := range list(dig(tc, "input_series")) {
			checkMetricNames(t, rulesTestFile+" input series", str(dig(s, "series")), defined)
		}
		for _, at := range list(dig(tc, "alert_rule_test")) {
			name := str(dig(at, "alertname"))
			if _, ok := severities[name]; !ok {
				t.Errorf("%s: tests alert %q, which the rules do not define", rulesTestFile, name)
				continue
			}
			exp := list(dig(at, "exp_alerts"))
			if len(exp) == 0 {
				quiet[name] = true
			}
			for _, e := range exp {
				if fired[name] == nil {
					fired[name] = map[string]bool{}
				}
				fired[name][str(dig(e, "exp_labels", "severity"))] = true
			}
		}
	}
	for _, name := range sortedKeys(severities) {
		for sev := range severities[name] {
			if !fired[name][sev] {
				t.Errorf("%s: no case where %s fires with severity %s", rulesTestFile, name, sev)
			}
		}
		if !quiet[name] {
			t.Errorf("%s: no case where %s stays quiet", rulesTestFile, name)
		}
	}
}

// runbookAnchors returns the GitHub anchors of the runbook's headings.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, runbookFile))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		out[githubAnchor(strings.TrimLeft(line, "# "))] = true
	}
	return out
}

// githubAnchor is the fragment GitHub gives a heading: lower case, spaces
// to hyphens, punctuation other than hyphens and underscores dropped.
func githubAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}
