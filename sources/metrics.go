// Package sources holds what the sources (postgres, dynamodb) share.
package sources

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cdcbridge/cdcbridge/cdc"
)

// Received holds a source's cdcbridge_events_received_total counters,
// indexed by op; the ops the source never reads are nil.
type Received [cdc.OpMessage + 1]prometheus.Counter

// NewReceived declares cdcbridge_events_received_total with f (the one
// declaration of the metric: each source calls it with its name and the
// ops it reads) and returns source's counters.
func NewReceived(f promauto.Factory, source string, ops ...cdc.Op) *Received {
	vec := f.NewCounterVec(prometheus.CounterOpts{
		Name: "cdcbridge_events_received_total",
		Help: "Events read from the source (changes, and read events of snapshots and loads), by source and op.",
	}, []string{"source", "op"})
	var r Received
	for _, op := range ops {
		r[op] = vec.WithLabelValues(source, op.String())
	}
	return &r
}
