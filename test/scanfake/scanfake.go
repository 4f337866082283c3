// Package scanfake is a scripted DynamoDB endpoint for loads: an HTTP
// server speaking the DynamoDB JSON protocol (DynamoDB_20120810.*) that
// answers DescribeTable and parallel Scans of a table it makes up, reports
// the consumed capacity of each Scan as DynamoDB computes it (strongly
// consistent: one unit per 4 KB of the page's items, rounded up), and
// refuses Scans with ProvisionedThroughputExceededException while the
// capacity consumed over the last second would go over its limit. DynamoDB
// Local does neither (it never throttles), so tests and benchmarks of the
// read-capacity budget use this.
package scanfake

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options describe the table.
type Options struct {
	Table     string // default "orders"
	Items     int
	ItemBytes int // size of one item as DynamoDB counts it (default 100)
	// ReadCapacity is the table's provisioned read capacity (DescribeTable);
	// 0: an on-demand table.
	ReadCapacity int64
	// ThrottleRCU refuses Scans while the capacity consumed in the last
	// second is over it (0: never).
	ThrottleRCU float64
}

// Served is one Scan answered: when, and its consumed capacity.
type Served struct {
	At    time.Time
	Units float64
}

// Server is the endpoint. URL is its address.
type Server struct {
	URL  string
	srv  *httptest.Server
	opts Options
	pad  string

	mu        sync.Mutex
	served    []Served
	throttled int
	scans     int
}

// New starts a server; Close stops it.
func New(o Options) *Server {
	if o.Table == "" {
		o.Table = "orders"
	}
	if o.ItemBytes == 0 {
		o.ItemBytes = 100
	}
	s := &Server{opts: o}
	// pk "item-%08d" (13 bytes), sk 1 (number), pad: the rest.
	s.pad = strings.Repeat("x", max(o.ItemBytes-len("pk")-13-len("sk")-1-len("pad"), 1))
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Served returns every Scan answered, in order.
func (s *Server) Served() []Served {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Served(nil), s.served...)
}

// Throttled returns how many Scans were refused for capacity, and Scans
// how many were asked for.
func (s *Server) Throttled() (throttled, scans int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttled, s.scans
}

// Key returns the name (pk) of item i.
func Key(i int) string { return fmt.Sprintf("item-%08d", i) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	_, op, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
	body, _ := io.ReadAll(r.Body)
	var in map[string]any
	_ = json.Unmarshal(body, &in)
	if name, _ := in["TableName"].(string); name != s.opts.Table {
		writeErr(w, 400, "ResourceNotFoundException", "Requested resource not found")
		return
	}
	switch op {
	case "DescribeTable":
		s.describe(w)
	case "Scan":
		s.scan(w, in)
	default:
		writeErr(w, 400, "UnknownOperationException", op)
	}
}

func (s *Server) describe(w http.ResponseWriter) {
	t := map[string]any{
		"TableName":      s.opts.Table,
		"TableStatus":    "ACTIVE",
		"ItemCount":      s.opts.Items,
		"TableSizeBytes": s.opts.Items * s.opts.ItemBytes,
		"KeySchema": []any{
			map[string]any{"AttributeName": "pk", "KeyType": "HASH"},
			map[string]any{"AttributeName": "sk", "KeyType": "RANGE"},
		},
		"ProvisionedThroughput": map[string]any{"ReadCapacityUnits": s.opts.ReadCapacity, "WriteCapacityUnits": 0},
	}
	if s.opts.ReadCapacity == 0 {
		t["BillingModeSummary"] = map[string]any{"BillingMode": "PAY_PER_REQUEST"}
	}
	writeJSON(w, map[string]any{"Table": t})
}

// maxPageBytes is DynamoDB's page size.
const maxPageBytes = 1 << 20

func (s *Server) scan(w http.ResponseWriter, in map[string]any) {
	seg, _ := in["Segment"].(float64)
	total, _ := in["TotalSegments"].(float64)
	if total < 1 {
		total = 1
	}
	limit := math.MaxInt
	if l, ok := in["Limit"].(float64); ok && l > 0 {
		limit = int(l)
	}
	// Items of segment seg are i with i % total == seg, in order.
	next := int(seg)
	if k, ok := in["ExclusiveStartKey"].(map[string]any); ok {
		pk, _ := k["pk"].(map[string]any)
		name, _ := pk["S"].(string)
		i, err := strconv.Atoi(strings.TrimPrefix(name, "item-"))
		if err != nil {
			writeErr(w, 400, "ValidationException", "bad ExclusiveStartKey")
			return
		}
		next = i + int(total)
	}
	var items []any
	bytes := 0
	i := next
	for ; i < s.opts.Items && len(items) < limit && bytes+s.opts.ItemBytes <= maxPageBytes; i += int(total) {
		items = append(items, map[string]any{
			"pk":  map[string]any{"S": Key(i)},
			"sk":  map[string]any{"N": "1"},
			"pad": map[string]any{"S": s.pad},
		})
		bytes += s.opts.ItemBytes
	}
	units := math.Max(1, math.Ceil(float64(bytes)/4096))
	s.mu.Lock()
	s.scans++
	if s.opts.ThrottleRCU > 0 {
		now := time.Now()
		recent := 0.0
		for j := len(s.served) - 1; j >= 0 && now.Sub(s.served[j].At) < time.Second; j-- {
			recent += s.served[j].Units
		}
		if recent+units > s.opts.ThrottleRCU {
			s.throttled++
			s.mu.Unlock()
			writeErr(w, 400, "ProvisionedThroughputExceededException", "The level of configured provisioned throughput for the table was exceeded")
			return
		}
	}
	s.served = append(s.served, Served{At: time.Now(), Units: units})
	s.mu.Unlock()
	out := map[string]any{
		"Items":            items,
		"Count":            len(items),
		"ScannedCount":     len(items),
		"ConsumedCapacity": map[string]any{"TableName": s.opts.Table, "CapacityUnits": units},
	}
	if i < s.opts.Items && len(items) > 0 {
		last := items[len(items)-1].(map[string]any)
		out["LastEvaluatedKey"] = map[string]any{"pk": last["pk"], "sk": last["sk"]}
	}
	writeJSON(w, out)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"__type":"com.amazonaws.dynamodb.v20120810#%s","message":%q}`, code, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeErr(w, 500, "InternalServerError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	_, _ = w.Write(b)
}
