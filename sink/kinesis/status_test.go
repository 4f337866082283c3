package kinesis

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestStatusJSONGolden pins the /status encoding (documented in
// DESIGN.md): field names, order and omissions.
func TestStatusJSONGolden(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	var full Status
	full.Stream = "orders"
	full.StreamARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"
	full.StreamStatus = "ACTIVE"
	full.CapacityMode = "PROVISIONED"
	full.RecordDistribution = "CUSTOM"
	full.MaxRecordBytes = 1 << 20
	full.Shards = 4
	full.Ordering = "key"
	full.Aggregate = true
	full.AggregateMode = "hot"
	full.Compression = "gzip"
	full.CompressionRatio = 3.2
	full.Aggregates = 5
	full.AggregatedRecords = 50
	full.Ready = true
	full.InflightEvents = 6
	full.InflightBytes = 7000
	full.InflightRequests = 2
	full.RetryingKeys = 3
	full.FailingRequests = 1
	full.LastError = "10 records: timeout"
	full.LastErrorAt = at
	full.ThrottledEntries = 8
	full.LastThrottleAt = at.Add(time.Second)
	full.DLQRecords = 9
	full.Delivered = 100
	full.Fatal = "stream gone"
	full.Degraded = []string{"stopped: stream gone", "retrying: 3 partition keys wait"}

	var got []byte
	for _, st := range []Status{full, {}, newStatusBox(Config{Stream: "orders", Ordering: OrderingKey}).snapshot(false, 0, 0)} {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		got = append(append(got, b...), '\n')
	}
	golden := filepath.Join("testdata", "status.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("/status encoding changed (-want +got):\n%s", d)
	}
}
