package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

const dashboardFile = "grafana/cdcbridge.json"

type grafanaPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  *grafanaDS      `json:"datasource"`
	GridPos     gridPos         `json:"gridPos"`
	Targets     []grafanaTarget `json:"targets"`
	Panels      []grafanaPanel  `json:"panels"` // collapsed rows
}

type grafanaDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct{ X, Y, W, H int }

type grafanaTarget struct {
	RefID      string     `json:"refId"`
	Expr       string     `json:"expr"`
	Datasource *grafanaDS `json:"datasource"`
}

type grafanaDashboard struct {
	Title         string         `json:"title"`
	UID           string         `json:"uid"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// What the dashboard must show, by the metric that shows it.
var dashboardTopics = map[string]*regexp.Regexp{
	"throughput in":           regexp.MustCompile(`rate\(cdcbridge_events_received_total\b`),
	"throughput out":          regexp.MustCompile(`rate\(cdcbridge_events_delivered_total\b`),
	"lag":                     regexp.MustCompile(`\bcdcbridge_lag_seconds\b`),
	"slot lag":                regexp.MustCompile(`\bcdcbridge_postgres_slot_lag_bytes\b`),
	"failed records by code":  regexp.MustCompile(`by \(code\) \(rate\(cdcbridge_kinesis_failed_records_total\b`),
	"retries":                 regexp.MustCompile(`\bcdcbridge_kinesis_retries_total\b`),
	"batch sizes (records)":   regexp.MustCompile(`\bcdcbridge_kinesis_batch_records_bucket\b`),
	"batch sizes (bytes)":     regexp.MustCompile(`\bcdcbridge_kinesis_batch_bytes_bucket\b`),
	"in-flight events":        regexp.MustCompile(`\bcdcbridge_inflight_events\b`),
	"in-flight bytes":         regexp.MustCompile(`\bcdcbridge_inflight_bytes\b`),
	"dead letters":            regexp.MustCompile(`\bcdcbridge_dlq_records_total\b`),
	"DynamoDB iterator age":   regexp.MustCompile(`\bcdcbridge_dynamodb_iterator_age_seconds\b`),
	"PutRecords by result":    regexp.MustCompile(`\bcdcbridge_kinesis_put_requests_total\b`),
	"PutRecords latency":      regexp.MustCompile(`\bcdcbridge_kinesis_put_duration_seconds_bucket\b`),
	"process resident memory": regexp.MustCompile(`\bprocess_resident_memory_bytes\b`),
}

// Metrics from client_golang's collectors the dashboard may use, and the
// constructor the daemon must call for them to exist.
var collectorMetrics = map[string]string{
	"process_resident_memory_bytes": "NewProcessCollector",
}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" || len(d.UID) > 40 {
		t.Errorf("%s: needs a title and a uid of at most 40 characters", dashboardFile)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("%s: schemaVersion %d; panels here use the timeseries format of Grafana 9 and later (36+)", dashboardFile, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("%s: needs a datasource variable of type datasource, so it imports into any Grafana", dashboardFile)
	}

	defined := definedMetrics(t)
	collectors := collectorConstructors(t)
	var all []grafanaPanel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]bool{}
	var exprs strings.Builder
	var boxes []grafanaPanel
	for _, p := range all {
		where := fmt.Sprintf("%s: panel %d %q", dashboardFile, p.ID, p.Title)
		if p.ID == 0 || ids[p.ID] {
			t.Errorf("%s: needs a unique id", where)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v is outside the 24-column grid", where, g)
		}
		for _, o := range boxes {
			if overlap(o.GridPos, g) {
				t.Errorf("%s overlaps panel %d %q", where, o.ID, o.Title)
			}
		}
		boxes = append(boxes, p)
		switch p.Type {
		case "row":
			continue
		case "timeseries", "stat", "gauge", "bargauge", "table", "heatmap":
		default:
			t.Errorf("%s: panel type %q", where, p.Type)
		}
		if p.Title == "" || p.Description == "" {
			t.Errorf("%s: needs a title and a description", where)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource should be the ${datasource} variable", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		for _, tg := range p.Targets {
			tw := where + " query " + tg.RefID
			if tg.Expr == "" {
				t.Errorf("%s: empty expression", tw)
				continue
			}
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: datasource should be the ${datasource} variable", tw)
			}
			exprs.WriteString(tg.Expr + "\n")
			// Grafana's interval variables stand where PromQL has a duration.
			checkPromQL(t, tw, strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$__interval", "1m").Replace(tg.Expr))
			checkMetricNames(t, tw, tg.Expr, defined)
			checkSelectors(t, tw, tg.Expr)
			for name, ctor := range collectorMetrics {
				if strings.Contains(tg.Expr, name) && !collectors[ctor] {
					t.Errorf("%s: uses %s, but the daemon does not register collectors.%s", tw, name, ctor)
				}
			}
			for _, m := range regexp.MustCompile(`\b([a-z_]+)\{`).FindAllStringSubmatch(tg.Expr, -1) {
				if _, ok := collectorMetrics[m[1]]; !ok && !strings.HasPrefix(m[1], "cdcbridge_") {
					t.Errorf("%s: metric %s is neither cdcbridge's nor a known collector's", tw, m[1])
				}
			}
		}
	}
	for topic, re := range dashboardTopics {
		if !re.MatchString(exprs.String()) {
			t.Errorf("%s: no panel shows %s (%s)", dashboardFile, topic, re)
		}
	}
}

// checkSelectors requires every metric selector to filter by the
// dashboard's namespace and instance variables, so the variables select
// what every panel shows.
func checkSelectors(t *testing.T, where, expr string) {
	t.Helper()
	for _, m := range regexp.MustCompile(`\b([a-z_]+)(\{[^}]*\})?`).FindAllStringSubmatch(expr, -1) {
		name := m[1]
		if !strings.HasPrefix(name, "cdcbridge_") && collectorMetrics[name] == "" {
			continue
		}
		if !strings.Contains(m[2], `namespace=~"$namespace"`) || !strings.Contains(m[2], `instance=~"$instance"`) {
			t.Errorf("%s: %s is not filtered by $namespace and $instance", where, name)
		}
	}
}

func overlap(a, b gridPos) bool {
	return a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H
}

// collectorConstructors reports which client_golang collector constructors
// the daemon's code calls.
func collectorConstructors(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, f := range goSources(t, "cmd") {
		b, err := os.ReadFile(f.fset.File(f.file.Pos()).Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"NewProcessCollector", "NewGoCollector"} {
			if strings.Contains(string(b), "collectors."+c+"(") {
				out[c] = true
			}
		}
	}
	return out
}
