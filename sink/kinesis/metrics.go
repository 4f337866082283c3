package kinesis

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the producer's Prometheus metrics (names in DESIGN.md).
// Labels are low-cardinality: results, error codes, never a key.
type metrics struct {
	requests      *prometheus.CounterVec // result
	putDuration   prometheus.Histogram
	failedRecords *prometheus.CounterVec // code
	retries       prometheus.Counter
	batchRecords  prometheus.Histogram
	batchBytes    prometheus.Histogram
	inflightEv    prometheus.Gauge
	inflightBytes prometheus.Gauge
	dlqRecords    *prometheus.CounterVec // reason
	delivered     prometheus.Counter
	throttleWait  prometheus.Counter
	throttleWaits prometheus.Counter
	shardRefresh  prometheus.Counter
	shards        prometheus.Gauge
	userPerAgg    prometheus.Histogram
	aggBytes      *prometheus.CounterVec // form
}

// newMetrics creates the producer's metrics and registers them with reg
// (nil: not registered).
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_put_requests_total",
			Help: "PutRecords requests by result: ok, partial (some entries failed), throttled, timeout, invalid, expired_credentials, fatal, error.",
		}, []string{"result"}),
		putDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcbridge_kinesis_put_duration_seconds",
			Help:    "Duration of one PutRecords attempt.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		failedRecords: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_failed_records_total",
			Help: "Kinesis records that failed, by error code: the entry's code, or for every entry of a failed request the request's code or transport failure (timeout, connection reset, ...); other codes are \"other\".",
		}, []string{"code"}),
		retries: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_retries_total",
			Help: "Kinesis records sent again after a failed or ambiguous attempt.",
		}),
		batchRecords: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcbridge_kinesis_batch_records",
			Help:    "Kinesis records per PutRecords request.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 200, 300, 400, 500},
		}),
		batchBytes: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcbridge_kinesis_batch_bytes",
			Help:    "Data plus partition key bytes per PutRecords request.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 9),
		}),
		inflightEv: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_inflight_events",
			Help: "Events accepted by the sink and not yet acknowledged.",
		}),
		inflightBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_inflight_bytes",
			Help: "Budget bytes held by events accepted by the sink and not yet acknowledged.",
		}),
		dlqRecords: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_dlq_records_total",
			Help: "Events written to the dead-letter directory, by reason (oversize, invalid).",
		}, []string{"reason"}),
		delivered: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_events_delivered_total",
			Help: "Events acknowledged after Kinesis accepted them (or their dead-letter placeholder).",
		}),
		throttleWait: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_throttle_wait_seconds_total",
			Help: "Time shards spent waiting for their token buckets (planned pacing below the shard limits).",
		}),
		throttleWaits: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_throttle_waits_total",
			Help: "Times a shard had to wait for its token buckets.",
		}),
		shardRefresh: f.NewCounter(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_shard_map_refreshes_total",
			Help: "Shard map reloads (start, shard count change, or a put result in another shard than predicted).",
		}),
		shards: f.NewGauge(prometheus.GaugeOpts{
			Name: "cdcbridge_kinesis_shards",
			Help: "Open shards of the stream.",
		}),
		userPerAgg: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcbridge_kinesis_aggregated_user_records",
			Help:    "User records per KPL aggregated record.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500},
		}),
		aggBytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcbridge_kinesis_aggregate_bytes_total",
			Help: "Bytes of the aggregates built with CDCBRIDGE_KINESIS_AGGREGATE_COMPRESSION=gzip, before (raw) and after (compressed) compression.",
		}, []string{"form"}),
	}
	for _, r := range []string{"ok", "partial", "throttled", "timeout", "invalid", "expired_credentials", "fatal", "error"} {
		m.requests.WithLabelValues(r)
	}
	for _, r := range []string{"oversize", "invalid"} {
		m.dlqRecords.WithLabelValues(r)
	}
	return m
}
