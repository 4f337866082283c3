package sources

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cdcbridge/cdcbridge/cdc"
)

func TestNewReceived(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := NewReceived(promauto.With(reg), "dynamodb", cdc.OpInsert, cdc.OpRead)
	r[cdc.OpInsert].Inc()
	r[cdc.OpRead].Add(2)
	if r[cdc.OpUpdate] != nil || r[cdc.OpMessage] != nil {
		t.Error("counters for ops the source does not read exist")
	}
	want := `
# HELP cdcbridge_events_received_total Events read from the source (changes, and read events of snapshots and loads), by source and op.
# TYPE cdcbridge_events_received_total counter
cdcbridge_events_received_total{op="insert",source="dynamodb"} 1
cdcbridge_events_received_total{op="read",source="dynamodb"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cdcbridge_events_received_total"); err != nil {
		t.Error(err)
	}
	// Without a registry the counters count and nothing is registered.
	n := NewReceived(promauto.With(nil), "postgres", cdc.Ops...)
	n[cdc.OpMessage].Inc()
	if v := testutil.ToFloat64(n[cdc.OpMessage]); v != 1 {
		t.Errorf("unregistered counter = %v, want 1", v)
	}
}
